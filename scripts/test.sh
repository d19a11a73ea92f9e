#!/bin/sh
# Set everything up, then run the whole test suite.
set -e
cd "$(dirname "$0")/.."
sh scripts/setup.sh test
.venv/bin/python -m pytest "$@"

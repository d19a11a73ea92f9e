#!/bin/sh
# Set everything up, then run the whole test suite.
set -e
cd "$(dirname "$0")/.."
sh scripts/setup.sh test
# The example plugins, whose own test suites run with the rest.
.venv/bin/python -m pip install --quiet -e plugins/styleplug-meanstd -e plugins/styleplug-vgg19avg
.venv/bin/python -m pytest "$@"

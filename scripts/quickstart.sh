#!/bin/sh
# Set everything up, then paint the bundled Tübingen photo in the style of The Starry Night: once
# in one pass with the shipped fast style model, once with the optimiser.
set -e
cd "$(dirname "$0")/.."
sh scripts/setup.sh
mkdir -p out
.venv/bin/styleplug apply styleplug/models/styles.npz styleplug/examples/tubingen.jpg --style starry_night --output out/tubingen_fast.png
.venv/bin/styleplug run styleplug/examples/tubingen.jpg styleplug/examples/starry_night.jpg --output out/tubingen_starry_night.png --size 256 --steps 150

#!/bin/sh
# Set everything up, then paint the bundled Tübingen photo in the style of The Starry Night.
set -e
cd "$(dirname "$0")/.."
sh scripts/setup.sh
mkdir -p out
.venv/bin/styleplug run styleplug/examples/tubingen.jpg styleplug/examples/starry_night.jpg --output out/tubingen_starry_night.png --size 256 --steps 150

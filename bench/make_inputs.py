"""Bench inputs made from the committed fixture photos (nothing downloaded):

  photo512/  8 JPEGs of 512-1024 px as they are in tests/fixtures/images
  jpeg12mp/  8 phone-sized JPEGs, 4032x3024, quality 90 (what phones upload)
  png1080/   8 PNG "screenshots", 1920x1080, RGBA

Usage: python bench/make_inputs.py tests/fixtures/images OUT_DIR [COUNT]
"""

import shutil
import sys
from pathlib import Path

from PIL import Image

PHOTOS = ["baseline.jpg", "progressive.jpg", "cmyk.jpg", "grayscale.jpg", "exif-3.jpg", "exif-6.jpg", "exif-8.jpg", "landscape-1024.jpg"]


def main() -> None:
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    for d in ("photo512", "jpeg12mp", "png1080"):
        shutil.rmtree(out / d, ignore_errors=True)
        (out / d).mkdir(parents=True)
    for i, name in enumerate(PHOTOS[:count]):
        shutil.copy(src / name, out / "photo512" / name)
        rgb = Image.open(src / name).convert("RGB")
        rgb.resize((4032, 3024), Image.Resampling.LANCZOS).save(out / "jpeg12mp" / f"phone-{i}.jpg", quality=90)
        shot = rgb.resize((1920, 1080), Image.Resampling.BILINEAR).convert("RGBA")
        shot.save(out / "png1080" / f"screen-{i}.png", optimize=False)
    print(f"inputs in {out}")


if __name__ == "__main__":
    main()

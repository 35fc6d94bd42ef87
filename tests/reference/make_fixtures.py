"""Make the committed fixture images from photos that registry packages ship.

Sources: foolbox==3.3.4 (ImageNet photos) and scikit-image (astronaut, chelsea, coffee,
rocket, camera, logo, hubble). Every file is derived deterministically, so rerunning the
script gives the same pixels. Covers each supported format and the awkward cases:
EXIF orientations 3/6/8, CMYK JPEG, progressive JPEG, RGBA/LA/palette/16-bit PNG, WebP,
GIF (animated, first frame counts), BMP, TIFF, very wide and very tall images, 10x10.
Also writes tests/fixtures/bad/ with inputs that must be rejected cleanly.

Usage: python tests/reference/make_fixtures.py tests/fixtures
"""

import argparse
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

import foolbox
import skimage

FOOLBOX = Path(foolbox.__file__).parent / "data"
SKIMAGE = Path(skimage.__file__).parent / "data"


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def png16(path: Path, arr: np.ndarray) -> None:
    """Write a 16-bit PNG by hand (Pillow cannot write 16-bit RGB)."""
    h, w = arr.shape[:2]
    color_type = 2 if arr.ndim == 3 else 0
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def bomb_png(path: Path, width: int, height: int) -> None:
    """A valid PNG header that declares width x height pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    images, bad = args.out / "images", args.out / "bad"
    for d in (images, bad):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)

    imagenet = lambda i: Image.open(next(FOOLBOX.glob(f"imagenet_{i:02d}_*.jpg"))).convert("RGB")
    rocket = Image.open(SKIMAGE / "rocket.jpg").convert("RGB")  # 640x427
    camera = Image.open(SKIMAGE / "camera.png")  # 512x512 L
    chelsea = Image.open(SKIMAGE / "chelsea.png").convert("RGB")  # 451x300
    coffee = Image.open(SKIMAGE / "coffee.png").convert("RGB")  # 600x400
    astronaut = Image.open(SKIMAGE / "astronaut.png").convert("RGB").resize((320, 320), Image.Resampling.LANCZOS)
    hubble = Image.open(SKIMAGE / "hubble_deep_field.jpg").convert("RGB")  # 1000x872
    logo = Image.open(SKIMAGE / "logo.png")  # 500x500 RGBA

    imagenet(0).save(images / "baseline.jpg", quality=90)
    imagenet(1).save(images / "progressive.jpg", quality=90, progressive=True)
    imagenet(2).convert("CMYK").save(images / "cmyk.jpg", quality=90)
    big = next(p for p in sorted(FOOLBOX.glob("imagenet_*.jpg")) if Image.open(p).size != (512, 512))
    Image.open(big).convert("RGB").save(images / "landscape-1024.jpg", quality=85)
    # Stored sideways: exif_transpose turns each back into the upright rocket.
    rocket.transpose(Image.Transpose.ROTATE_180).save(images / "exif-3.jpg", quality=90, exif=exif_with_orientation(3))
    rocket.transpose(Image.Transpose.ROTATE_90).save(images / "exif-6.jpg", quality=90, exif=exif_with_orientation(6))
    rocket.transpose(Image.Transpose.ROTATE_270).save(images / "exif-8.jpg", quality=90, exif=exif_with_orientation(8))
    camera.save(images / "grayscale.jpg", quality=90)
    camera.save(images / "grayscale.png")
    la = Image.merge("LA", (camera, Image.linear_gradient("L").resize(camera.size)))
    la.save(images / "gray-alpha.png")
    rgba = astronaut.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").rotate(90).resize(astronaut.size))
    rgba.save(images / "rgba.png")
    logo.save(images / "logo-rgba.png")
    pal = chelsea.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    pal.save(images / "palette.png", transparency=0)
    cam16 = (np.asarray(camera, dtype=np.uint32) * 257 + np.arange(512)[None, :] % 7).astype(np.uint16)
    png16(images / "gray16.png", cam16)
    png16(images / "rgb16.png", (np.asarray(coffee.resize((300, 200), Image.Resampling.LANCZOS), dtype=np.uint32) * 257 + 123).astype(np.uint16))
    imagenet(3).save(images / "lossy.webp", quality=80)
    imagenet(4).resize((256, 256), Image.Resampling.LANCZOS).save(images / "lossless.webp", lossless=True)
    frames = [imagenet(5).resize((320, 320)), imagenet(6).resize((320, 320))]
    frames = [f.quantize(colors=128, dither=Image.Dither.NONE) for f in frames]
    frames[0].save(images / "animated.gif", save_all=True, append_images=frames[1:], duration=200, loop=0)
    imagenet(7).resize((300, 240), Image.Resampling.LANCZOS).save(images / "photo.bmp")
    imagenet(8).resize((256, 256), Image.Resampling.LANCZOS).save(images / "photo.tiff", compression="tiff_lzw")
    hubble.resize((2000, int(872 * 2000 / 1000)), Image.Resampling.LANCZOS).crop((0, 600, 2000, 900)).save(images / "wide-2000x300.jpg", quality=85)
    coffee.transpose(Image.Transpose.ROTATE_90).resize((300, 2000), Image.Resampling.LANCZOS).save(images / "tall-300x2000.jpg", quality=85)
    # Panoramas of 75:1, far past any camera's: resizing keeps only the crop window's pixels (issue 11).
    hubble.resize((3000, 2616), Image.Resampling.LANCZOS).crop((0, 1300, 3000, 1340)).save(images / "panorama-3000x40.png")
    hubble.resize((3440, 3000), Image.Resampling.LANCZOS).crop((1700, 0, 1740, 3000)).save(images / "panorama-40x3000.png")
    chelsea.resize((10, 10), Image.Resampling.LANCZOS).save(images / "tiny-10x10.png")

    baseline = (images / "baseline.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(baseline[: len(baseline) // 3])
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "not-an-image.txt").write_text("This is a text file, not a photo.\n")
    bomb_png(bad / "bomb-40000x40000.png", 40000, 40000)
    # An iPhone HEIC starts with an ISO-BMFF `ftyp` box whose brand is `heic`.
    (bad / "photo.heic").write_bytes(struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic" + b"\x00" * 64)

    for p in sorted(images.iterdir()):
        im = Image.open(p)
        print(f"{p.name:22} {im.format:5} {im.mode:6} {im.size[0]}x{im.size[1]} {p.stat().st_size / 1024:7.1f} KiB")


if __name__ == "__main__":
    main()

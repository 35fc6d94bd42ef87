"""Golden files for a bundle of another family (SigLIP, SigLIP2, XLM-R), from that family's own Python.

Images: Pillow opens, turns upright and converts as golden.py does (the project's decoding
choices); then the family's transform. `squash` (SigLIP): open_clip's own eval transform
(`open_clip.transform.image_transform` with the bundle's preprocess_cfg.json: Resize to
(H, W) with Pillow's bicubic, ToTensor, Normalize). `shortest` (XLM-R, a CLIP image tower):
golden.py's reference (short side resized, center crop at (d // 2) as HF and immich).
Text: open_clip's `HFTokenizer` on the bundle's textual/ folder with the config's cleaning
(`canonicalize` for SigLIP: big_vision's rule, `_` to space, string.punctuation removed,
lowercased, whitespace collapsed; `whitespace` otherwise), i.e. the transformers tokenizer
called with max_length = context length, padding="max_length", truncation=True. The
attention mask, for towers that take one, is that call's.

open_clip also runs ftfy and html.unescape first, which neither immich nor the Rust embedder
does. Where they change a query (`&amp;`, a few ligatures), `ids` are those of the query
without that step and `open_clip_ids` keep open_clip's, so the difference stays visible.
A query that cleaning empties is recorded with `"empty": true` (the Rust side refuses it).

The preprocessed images are stored as their 8-bit pixels (`pixels/*.u8`, CHW), from which the
float tensor follows exactly by (v / 255 - mean) / std: the script checks that it does, and
the files are a quarter of the float32 size.

Usage: python tests/reference/golden_family.py tests/fixtures/tiny-siglip tests/fixtures/images tests/fixtures/golden-siglip
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import golden  # noqa: E402

# The CLIP queries, and more scripts and emoji for the multilingual towers.
QUERIES = golden.QUERIES + [
    "一只猫睡在沙发上的照片",
    "海边的日落",
    "صورة كلب يلعب في الثلج",
    "고양이와 강아지 사진",
    "🚀☕🌸",
    "a dog 🐶 in Tokyo 東京",
    "Καλημέρα κόσμε",
    "under_score and a - dash  with  gaps",
    "ＦＵＬＬＷＩＤＴＨ letters",
]


def squash_tensor(path: Path, cfg: dict) -> np.ndarray:
    import torch
    from open_clip.transform import PreprocessCfg, image_transform_v2

    pp = PreprocessCfg(
        size=tuple(cfg["size"]),
        mode=cfg.get("mode", "RGB"),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=cfg["interpolation"],
        resize_mode=cfg["resize_mode"],
        fill_color=cfg.get("fill_color", 0),
    )
    transform = image_transform_v2(pp, is_train=False)
    with torch.no_grad():
        return transform(golden.reference_rgb(path)).numpy().astype(np.float32)


def family_tensor(path: Path, cfg: dict) -> np.ndarray:
    mode = cfg.get("resize_mode", "shortest")
    if mode == "squash":
        return squash_tensor(path, cfg)
    assert mode == "shortest", f"no reference for resize_mode {mode}"
    return golden.reference_tensor(path, cfg)[0]


def to_pixels(tensor: np.ndarray, cfg: dict) -> np.ndarray:
    """The 8-bit CHW pixels the tensor was normalised from; checks the round trip is exact."""
    mean = np.asarray(cfg["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(cfg["std"], dtype=np.float32)[:, None, None]
    pixels = np.rint((tensor * std + mean) * 255).clip(0, 255).astype(np.uint8)
    again = (pixels.astype(np.float32) / np.float32(255.0) - mean) / std
    err = float(np.abs(again - tensor).max())
    assert err < 1e-5, f"tensor is not an 8-bit image normalised ({err})"
    return pixels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("images", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()

    from open_clip.tokenizer import HFTokenizer, basic_clean, canonicalize_text, whitespace_clean

    shutil.rmtree(args.out, ignore_errors=True)
    (args.out / "pixels").mkdir(parents=True)
    cfg = json.loads((args.model / "visual" / "preprocess_cfg.json").read_text())
    text_cfg = json.loads((args.model / "config.json").read_text())["text_cfg"]
    visual, textual = golden.open_towers(args.model)

    images = []
    for path in sorted(args.images.iterdir()):
        tensor = family_tensor(path, cfg)
        width, height = golden.reference_rgb(path).size
        pixel_file = f"pixels/{path.name}.u8"
        to_pixels(tensor, cfg).tofile(args.out / pixel_file)
        emb = visual.run(None, {visual.get_inputs()[0].name: tensor[None]})[0][0]
        images.append({"file": path.name, "width": width, "height": height, "pixels": pixel_file, "embedding": emb.tolist()})

    ctx = text_cfg.get("context_length", 77)
    clean = text_cfg.get("tokenizer_kwargs", {}).get("clean", "whitespace")
    oc = HFTokenizer(str(args.model / "textual"), context_length=ctx, clean=clean)
    without_ftfy = canonicalize_text if clean == "canonicalize" else whitespace_clean
    inputs = {i.name: i.type for i in textual.get_inputs()}
    texts, differ = [], []
    for q in QUERIES:
        cleaned = without_ftfy(q)
        if not cleaned:
            texts.append({"text": q, "empty": True})
            continue
        call = oc.tokenizer([cleaned], max_length=ctx, padding="max_length", truncation=True)
        ids, mask = call["input_ids"][0], call["attention_mask"][0]
        entry = {"text": q, "ids": ids}
        open_clip_ids = oc([q])[0].tolist()
        if open_clip_ids != ids:
            assert without_ftfy(basic_clean(q)) != cleaned, f"ids differ from open_clip's for another reason: {q!r}"
            entry["open_clip_ids"] = open_clip_ids
            differ.append(q)
        feed = {"text": [ids]} if "text" in inputs else {"input_ids": [ids], "attention_mask": [mask]}
        feed = {k: np.asarray(v, dtype=np.int32 if "int32" in inputs[k] else np.int64) for k, v in feed.items()}
        entry["embedding"] = textual.run(None, feed)[0][0].tolist()
        texts.append(entry)

    meta = {
        "model": str(args.model),
        "onnxruntime": ort.__version__,
        "pillow": Image.__version__,
        "clean": clean,
        "mean": cfg["mean"],
        "std": cfg["std"],
    }
    (args.out / "images.json").write_text(json.dumps({"meta": meta, "images": images}, indent=1) + "\n")
    (args.out / "texts.json").write_text(json.dumps({"meta": meta, "texts": texts}, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(images)} images, {len(texts)} queries ({sum('empty' in t for t in texts)} empty after cleaning)")
    for q in differ:
        print(f"open_clip's ftfy/html step changes the ids of {q[:40]!r}")


if __name__ == "__main__":
    main()

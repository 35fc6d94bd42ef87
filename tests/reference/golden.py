"""Reference CLIP pipeline in Python: writes the golden files the Rust tests compare against.

Image path (open_clip / HF CLIPImageProcessor, with the project's deliberate choices):
  open with Pillow -> ImageOps.exif_transpose -> 16-bit grey scaled to 8 bits by its high
  byte (Pillow's own I;16 -> RGB conversion clips) -> convert("RGB") (alpha dropped) ->
  resize the short side to the model size with Pillow's antialiased bicubic, long side
  int(size * long / short) -> center crop with offsets (d // 2) as HF and immich do ->
  /255 -> (x - mean) / std -> CHW float32.
Text path (immich's, from the bundle's own files): collapse whitespace, tokenizers with
  the bundle's tokenizer.json, truncate to text_cfg.context_length keeping the special
  tokens, pad with tokenizer_config.json's pad_token.
Both towers run on onnxruntime (CPU). Outputs:
  golden/images.json   per image: file, decoded size, tensor file, embedding
  golden/tensors/*.f32 preprocessed tensors, little-endian float32, [3, H, W]
  golden/texts.json    per query: text, ids, embedding

Usage: python tests/reference/golden.py tests/fixtures/tiny-clip tests/fixtures/images tests/fixtures/golden
"""

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps
from tokenizers import Tokenizer

QUERIES = [
    "a photo of a cat",
    "a dog playing in the snow",
    "A RED CAR parked on the STREET",
    "  extra   spaces\tand\nnew lines  ",
    "rocket launch at night",
    "café crème brûlée",
    "Straße in München",
    "日本の桜の写真",
    "Привет, мир",
    "مرحبا بالعالم",
    "🐶🐱 cute pets",
    "😀",
    "!!!???...",
    "...",
    "rock'n'roll isn't dead, it's alive",
    "C++ & Rust <3 @home #tags",
    "100% sure: 3.14159 > 2.71828",
    "snake_case and kebab-case",
    "x",
    "&amp; an html entity",
    "ﬁsh with a ligature",
    "a very long description of a picture " * 12,
]


def reference_rgb(path: Path) -> Image.Image:
    img = Image.open(path)
    img.load()
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = Image.fromarray((np.asarray(img, dtype=np.uint32) >> 8).astype(np.uint8), mode="L")
    return img.convert("RGB")


def reference_tensor(path: Path, cfg: dict) -> tuple[np.ndarray, tuple[int, int]]:
    size = cfg["size"]
    h, w = (size, size) if isinstance(size, int) else size
    assert cfg.get("resize_mode", "shortest") == "shortest" and cfg.get("interpolation", "bicubic") == "bicubic"
    rgb = reference_rgb(path)
    decoded = rgb.size
    width, height = rgb.size
    target = min(h, w)
    if width <= height:
        new_w, new_h = target, int(target * height / width)
    else:
        new_w, new_h = int(target * width / height), target
    rgb = rgb.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - w) // 2, (new_h - h) // 2
    rgb = rgb.crop((left, top, left + w, top + h))
    x = np.asarray(rgb, dtype=np.float32) / np.float32(255.0)
    x = (x - np.asarray(cfg["mean"], dtype=np.float32)) / np.asarray(cfg["std"], dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32), decoded


def reference_ids(text: str, tokenizer: Tokenizer, context_length: int, pad_token: str) -> list[int]:
    text = " ".join(text.split())
    tokenizer.enable_padding(length=context_length, pad_token=pad_token, pad_id=tokenizer.token_to_id(pad_token))
    tokenizer.enable_truncation(max_length=context_length)
    return tokenizer.encode(text).ids


def open_towers(model: Path) -> tuple[ort.InferenceSession, ort.InferenceSession]:
    """The bundle's visual and textual sessions, one thread each (the goldens do not depend on threading)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return tuple(
        ort.InferenceSession(str(model / tower / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        for tower in ("visual", "textual")
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("images", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()

    shutil.rmtree(args.out, ignore_errors=True)
    (args.out / "tensors").mkdir(parents=True)
    cfg = json.loads((args.model / "visual" / "preprocess_cfg.json").read_text())
    config = json.loads((args.model / "config.json").read_text())
    visual, textual = open_towers(args.model)

    images = []
    for path in sorted(args.images.iterdir()):
        tensor, (width, height) = reference_tensor(path, cfg)
        tensor_file = f"tensors/{path.name}.f32"
        tensor.astype("<f4").tofile(args.out / tensor_file)
        emb = visual.run(None, {visual.get_inputs()[0].name: tensor[None]})[0][0]
        images.append({"file": path.name, "width": width, "height": height, "tensor": tensor_file, "embedding": emb.tolist()})

    tokenizer = Tokenizer.from_file(str(args.model / "textual" / "tokenizer.json"))
    tok_cfg = json.loads((args.model / "textual" / "tokenizer_config.json").read_text())
    ctx = config["text_cfg"].get("context_length", 77)
    texts = []
    for q in QUERIES:
        ids = reference_ids(q, tokenizer, ctx, tok_cfg["pad_token"])
        emb = textual.run(None, {textual.get_inputs()[0].name: np.asarray([ids], dtype=np.int32)})[0][0]
        texts.append({"text": q, "ids": ids, "embedding": emb.tolist()})

    meta = {"model": str(args.model), "onnxruntime": ort.__version__, "pillow": Image.__version__}
    (args.out / "images.json").write_text(json.dumps({"meta": meta, "images": images}, indent=1) + "\n")
    (args.out / "texts.json").write_text(json.dumps({"meta": meta, "texts": texts}, indent=1, ensure_ascii=False) + "\n")

    embs = np.asarray([i["embedding"] for i in images])
    sims = embs @ embs.T
    off = sims[~np.eye(len(embs), dtype=bool)]
    print(f"{len(images)} images, {len(texts)} queries; image-image cosine off-diagonal: min {off.min():.4f} max {off.max():.4f}")
    try:  # Cross-check against open_clip's own tokenizer where it is installed (not needed for the goldens).
        import open_clip

        ref = open_clip.get_tokenizer("ViT-B-32")
        for t in texts:
            oc = ref([t["text"]])[0].tolist()
            ours = [i if i != 49407 or n == t["ids"].index(49407) else 0 for n, i in enumerate(t["ids"])]
            if oc != ours:
                print(f"open_clip tokenizer differs (its ftfy/html cleaning): {t['text'][:40]!r}")
    except ImportError:
        pass


if __name__ == "__main__":
    main()

"""Build the tiny CLIP test model in immich's published layout.

Random weights (fixed seed), real architecture: an open_clip ViT visual tower and
a causal transformer text tower with context length 77 and the real OpenAI BPE
vocabulary (from the open_clip_torch wheel). The result loads exactly like
`immich-app/ViT-B-32__openai`:

    config.json                    open_clip model config (embed_dim, vision_cfg, text_cfg)
    visual/model.onnx              input `image` float32 [N,3,224,224] -> `embedding` [N,D], L2-normalised
    visual/preprocess_cfg.json     size, mode, mean, std, interpolation, resize_mode, fill_color
    textual/model.onnx             input `text` int32 [N,77] -> `embedding` [N,D], L2-normalised
    textual/tokenizer.json         HF tokenizers file (CLIPTokenizerFast)
    textual/tokenizer_config.json  names the pad token, as immich reads it
    textual/special_tokens_map.json

Needs torch, open_clip_torch==3.3.0, transformers and onnx (tests/reference/requirements-model.txt).
Usage: python tests/reference/make_tiny_clip.py OUT_DIR [--preset tiny|vit-b-32] [--seed 0]
"""

import argparse
import gzip
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.tokenizer import bytes_to_unicode

PRESETS = {
    # ~15 MB: small widths, but the real patch size, image size, context length and vocabulary.
    "tiny": dict(
        embed_dim=64,
        vision_cfg=dict(image_size=224, layers=2, width=64, patch_size=32, head_width=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
    ),
    # The ViT-B/32 architecture (open_clip model_configs/ViT-B-32.json): same compute as the real model.
    "vit-b-32": dict(
        embed_dim=512,
        vision_cfg=dict(image_size=224, layers=12, width=768, patch_size=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=12),
    ),
}


def write_tokenizer(out: Path) -> None:
    """Derive vocab/merges from open_clip's BPE file and save a CLIPTokenizerFast."""
    from transformers import CLIPTokenizerFast

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as tmp:
        vocab_path, merges_path = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab_path.write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
        merges_path.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
        # transformers 5.x: vocab=/merges= (vocab_file= is silently ignored and every id becomes 2).
        tok = CLIPTokenizerFast(vocab=str(vocab_path), merges=str(merges_path), pad_token="<|endoftext|>")
        tok.save_pretrained(out)
    for extra in ("vocab.json", "merges.txt", "chat_template.jinja"):
        (out / extra).unlink(missing_ok=True)
    ids = tok("a cat")["input_ids"]
    assert ids == [49406, 320, 2368, 49407], f"tokenizer is broken: 'a cat' -> {ids}"
    # immich reads the pad token from tokenizer_config.json; keep that key explicit.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["pad_token"] = "<|endoftext|>"
    cfg["model_max_length"] = 77
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def openai_preprocess(size: int) -> dict:
    """`visual/preprocess_cfg.json` of an OpenAI-CLIP-style tower, as immich writes it."""
    return {
        "size": [size, size],
        "mode": "RGB",
        "mean": list(OPENAI_DATASET_MEAN),
        "std": list(OPENAI_DATASET_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    }


class Visual(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        return F.normalize(self.model.encode_image(image), dim=-1)


class Textual(torch.nn.Module):
    """open_clip's `encode_text`, as immich exports it: one int32 `text` input."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, text):
        return F.normalize(self.model.encode_text(text), dim=-1)


def export(module, examples: dict, path: Path) -> None:
    """One ONNX tower, its inputs named as `examples` names them, batch size dynamic."""
    module.eval()
    assert not any(m.training for m in module.modules()), "export in eval mode: dropout would make the reference random"
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(examples)
    axes = {name: {0: "batch_size"} for name in names} | {"embedding": {0: "batch_size"}}
    torch.onnx.export(
        module,
        tuple(examples.values()),
        str(path),
        input_names=names,
        output_names=["embedding"],
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )


def check_export(path: Path, feed: dict, expected: np.ndarray) -> None:
    """The exported tower gives torch's output under onnxruntime."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {k: v.numpy() for k, v in feed.items()})[0]
    err = float(np.abs(got - expected).max())
    print(f"  {path.parent.name}: onnxruntime vs torch max |diff| = {err:.2e}, {path.stat().st_size / 1e6:.2f} MB")
    assert err < 1e-4, f"{path} export does not match torch"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    # The fused attention fast path has no ONNX export; the plain path computes the same thing.
    torch.backends.mha.set_fastpath_enabled(False)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    cfg = PRESETS[args.preset]
    model = open_clip.CLIP(**cfg).eval()

    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    (out / "visual").mkdir(parents=True)
    (out / "textual").mkdir(parents=True)

    size = cfg["vision_cfg"]["image_size"]
    ctx = cfg["text_cfg"]["context_length"]
    with torch.no_grad():
        image = torch.randn(2, 3, size, size)
        text = torch.randint(1, 49406, (2, ctx), dtype=torch.int32)
        text[:, 0], text[:, 10] = 49406, 49407
        export(Visual(model), {"image": image}, out / "visual" / "model.onnx")
        export(Textual(model), {"text": text}, out / "textual" / "model.onnx")
        ref_image = Visual(model)(image).numpy()
        ref_text = Textual(model)(text).numpy()

    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (out / "visual" / "preprocess_cfg.json").write_text(json.dumps(openai_preprocess(size), indent=2) + "\n")
    write_tokenizer(out / "textual")

    check_export(out / "visual" / "model.onnx", {"image": image}, ref_image)
    check_export(out / "textual" / "model.onnx", {"text": text}, ref_text)


if __name__ == "__main__":
    main()

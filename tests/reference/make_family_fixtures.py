"""Build tiny random-weight bundles of the other model families immich publishes, in its layout.

Each bundle keeps what the Rust embedder has to get right for its family: the tower inputs and
outputs, the image preprocessing config, the tokenizer's model type, special tokens, padding and
pooling. Only the sizes are tiny (widths of 64, two layers, vocabularies of a few hundred to 1,200
pieces trained here), so each bundle is 2 MB at most.

    tiny-siglip   open_clip's SigLIP (ViT-B-16-SigLIP): timm ViT with attention-pool ("map")
                  head, text tower without causal mask pooling the *last* position (so padding
                  to the context length of 64 matters), squash resize, mean/std 0.5,
                  `tokenizer_kwargs.clean = "canonicalize"`, a T5-style SentencePiece Unigram
                  tokenizer: NFKC, Metaspace, `</s>` appended, `<pad>` = 0, `</s>` = 1, `<unk>` = 2.
    tiny-siglip2  open_clip's SigLIP2 (ViT-B-16-SigLIP2): the same towers and preprocessing but
                  a Gemma-style tokenizer: byte-level-fallback BPE (no NFKC, no Metaspace:
                  spaces become "▁"), `<pad>` = 0, `<eos>` = 1, `<bos>` = 2, `<unk>` = 3, and
                  `<eos>` appended (big_vision's template; the real tokenizer files were not at hand).
    tiny-xlmr     a multilingual bundle of the XLM-R kind (open_clip's xlm-roberta-base-ViT-B-32,
                  and immich's M-CLIP exports): an HF XLM-RoBERTa text model built from an
                  XLMRobertaConfig (nothing is downloaded), mean pooling over the attention mask,
                  an MLP projection (open_clip's hf_proj_type default), exported with two int32
                  inputs `input_ids` and `attention_mask` as immich feeds its M-CLIP exports (its
                  open_clip XLM-R export takes `text` alone and masks the pads in the graph); the CLIP image
                  tower and preprocessing (shortest side, OpenAI mean/std). Unigram tokenizer
                  with `<s>` = 0, `<pad>` = 1, `</s>` = 2, `<unk>` = 3, `<mask>` last, and
                  `<s> … </s>` around the text.

Tokenizers are trained with the `tokenizers` library on a small built-in multilingual corpus
(English, other Latin scripts, Cyrillic, Greek, Arabic, CJK, emoji), so they are the real model
types with small vocabularies. Nothing is downloaded: HF_HUB_OFFLINE is set before anything is
imported, and open_clip's HF text tower is given its config object instead of a hub name.

Needs tests/reference/requirements-model.txt (torch, open_clip_torch, timm, transformers, onnx)
and onnxruntime for the export check.
Usage: python tests/reference/make_family_fixtures.py tests/fixtures [--family siglip|siglip2|xlmr]
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from open_clip.hf_model import HFTextEncoder  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

# The towers, their export and its check are the OpenAI-CLIP fixture's (this folder is on sys.path when run).
from make_tiny_clip import Textual, Visual, check_export, export, openai_preprocess  # noqa: E402

WIDTH = 64
SIGLIP_TIMM_NAME = "vit_tiny_test_patch16_siglip_224"

# Sentences the tokenizers are trained on. Enough of each script that its characters get pieces
# of their own; the English part repeats with variations so that whole words become pieces.
CORPUS_BASE = [
    "a photo of a cat sleeping on a sofa",
    "a dog playing in the snow with a red ball",
    "a red car parked on the street at night",
    "rocket launch at night over the sea",
    "a cup of coffee on a wooden table",
    "the astronaut floats in space near the station",
    "a grayscale picture of a camera man in a park",
    "a very long description of a picture of the mountains and the lake",
    "children and their parents walking on the beach in summer",
    "an old castle on a hill above a small village",
    "flowers in a garden, green leaves and blue sky",
    "a plate of pasta with tomato sauce and cheese",
    "snake case and kebab case are ways to write names",
    "it is raining in the city, people carry umbrellas",
    "the quick brown fox jumps over the lazy dog",
    "100 percent sure that 3 is greater than 2",
    "café crème brûlée à la carte, naïve façade",
    "Straße in München, schöne Grüße aus Köln",
    "el niño juega en el jardín con su perro",
    "Привет, мир! Кошка спит на диване.",
    "Καλημέρα κόσμε, μια φωτογραφία της θάλασσας",
    "مرحبا بالعالم، صورة قطة على الأريكة",
    "صورة كلب يلعب في الثلج",
    "日本の桜の写真、東京の夜景",
    "一只猫睡在沙发上的照片",
    "中文搜索测试：海边的日落",
    "한국어 사진 검색, 고양이와 강아지",
    "🐶🐱 cute pets 😀 🚀 ☕ 🌸",
    "emoji 🐶 dog 🐱 cat 🚀 rocket ☕ coffee 🌸 flower 😀 smile",
]
ADJECTIVES = ["red", "blue", "small", "large", "old", "new", "happy", "dark", "bright", "quiet"]
NOUNS = ["cat", "dog", "car", "house", "tree", "river", "city", "street", "bird", "boat", "flower", "photo"]


def corpus() -> list[str]:
    lines = list(CORPUS_BASE) * 4
    for i, adj in enumerate(ADJECTIVES):
        for j, noun in enumerate(NOUNS):
            other = NOUNS[(i + j) % len(NOUNS)]
            lines.append(f"a {adj} {noun} next to the {other}")
            lines.append(f"A {adj.upper()} {noun.capitalize()} near a {other}!")
    return lines


# ---------------------------------------------------------------------------------------------------------
# Tokenizers.


def unigram_tokenizer(specials: list[str], unk: str, vocab_size: int, nfkc: bool) -> Tokenizer:
    """A SentencePiece-style Unigram tokenizer (Metaspace pre-tokenizer), the T5 / XLM-R kind."""
    tok = Tokenizer(models.Unigram())
    steps = [normalizers.NFKC()] if nfkc else []
    tok.normalizer = normalizers.Sequence(steps + [normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=unk, shrinking_factor=0.75)
    tok.train_from_iterator(corpus(), trainer=trainer)
    # The trainer's parallel sums differ in the last bits from run to run, and it gives the single
    # characters it must keep scores 1e-4 apart in hash order; scores rounded to 0.01, in a fixed
    # order, make the same tokenizer on every run.
    vocab = json.loads(tok.to_str())["model"]["vocab"]
    fixed, learned = vocab[: len(specials)], vocab[len(specials) :]
    learned = sorted(((piece, round(score, 2)) for piece, score in learned), key=lambda p: (-p[1], p[0]))
    tok.model = models.Unigram([tuple(p) for p in fixed] + learned, unk_id=specials.index(unk), byte_fallback=False)
    return tok


def siglip_tokenizer() -> Tokenizer:
    tok = unigram_tokenizer(["<pad>", "</s>", "<unk>"], "<unk>", 1000, nfkc=True)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return tok


def siglip2_tokenizer() -> Tokenizer:
    """Gemma's kind: BPE over "▁"-joined text with byte fallback (no normaliser beyond the space)."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=specials, min_frequency=2)
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", tok.token_to_id("<eos>"))])
    return tok


def xlmr_tokenizer() -> Tokenizer:
    tok = unigram_tokenizer(["<s>", "<pad>", "</s>", "<unk>"], "<unk>", 2000, nfkc=True)
    tok.add_special_tokens(["<mask>"])
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    return tok


def save_tokenizer(tok: Tokenizer, out: Path, specials: dict, context_length: int) -> None:
    """tokenizer.json as the `tokenizers` library writes it, and the transformers configs next to it.

    transformers must give the same ids as the bare tokenizer.json: immich and the Rust embedder
    read only the latter, the Python reference (open_clip's HFTokenizer) goes through transformers.
    So the class is PreTrainedTokenizerFast, which runs tokenizer.json as it is: transformers 5's
    T5Tokenizer and XLMRobertaTokenizer rebuild the pipeline from the vocabulary when there is no
    SentencePiece model file, and drop the NFKC normaliser on the way.
    """
    from transformers import PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=context_length, **specials)
    hf.save_pretrained(out)
    tok.save(str(out / "tokenizer.json"))
    for extra in ("chat_template.jinja", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model"):
        (out / extra).unlink(missing_ok=True)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    # Only the family's own special tokens (transformers' class defaults name some the vocabulary lacks).
    cfg = {k: v for k, v in cfg.items() if not k.endswith("_token")} | specials
    cfg["model_max_length"] = context_length
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")

    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(str(out))
    bare = Tokenizer.from_file(str(out / "tokenizer.json"))
    for text in ("a photo of a cat", "Straße 日本 🐶", "مرحبا", "ﬁsh", "ＦＵＬＬ", "a  b", " x "):
        assert reloaded(text)["input_ids"] == bare.encode(text).ids, f"transformers and tokenizer.json differ on {text!r}"


# ---------------------------------------------------------------------------------------------------------
# Models.


@timm.models.register_model
def vit_tiny_test_patch16_siglip_224(pretrained=False, **kwargs):
    """vit_base_patch16_siglip_224's layout (no class token, attention-pool head) at width 64."""
    args = dict(patch_size=16, embed_dim=WIDTH, depth=2, num_heads=2, class_token=False, global_pool="map")
    # timm also passes its registry's pretrained_cfg and the like; the model takes only the head settings.
    head = {k: kwargs[k] for k in ("num_classes", "global_pool") if k in kwargs}
    return VisionTransformer(**{**args, **head})


def siglip_config(vocab_size: int, act_kwargs: dict | None) -> dict:
    """A tiny ViT-B-16-SigLIP(2) config: the same keys, tiny sizes."""
    text_cfg = {
        "context_length": 64,
        "vocab_size": vocab_size,
        "tokenizer_kwargs": {"clean": "canonicalize"},
        "width": WIDTH,
        "heads": 2,
        "layers": 2,
        "no_causal_mask": True,
        "proj_bias": True,
        "pool_type": "last",
        "norm_kwargs": {"eps": 1e-6},
    }
    if act_kwargs:
        text_cfg["act_kwargs"] = act_kwargs
    return {
        "embed_dim": WIDTH,
        "init_logit_bias": -10,
        "custom_text": True,
        "vision_cfg": {
            "image_size": 224,
            "timm_model_name": SIGLIP_TIMM_NAME,
            "timm_model_pretrained": False,
            "timm_pool": "map",
            "timm_proj": "none",
        },
        "text_cfg": text_cfg,
    }


SIGLIP_PREPROCESS = {
    "size": [224, 224],
    "mode": "RGB",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "interpolation": "bicubic",
    "resize_mode": "squash",
    "fill_color": 0,
}

class MaskedTextual(torch.nn.Module):
    """The HF text tower fed as immich feeds M-CLIP: `input_ids` and `attention_mask`, mean-pooled."""

    def __init__(self, encoder: HFTextEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask):
        out = self.encoder.transformer(input_ids=input_ids, attention_mask=attention_mask)
        pooled = self.encoder.pooler(out, attention_mask)
        return F.normalize(self.encoder.proj(pooled), dim=-1)


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def random_ids(vocab: int, ctx: int, first: int, last_specials: int) -> torch.Tensor:
    """Two rows of token ids: text, then an end token, then padding (id `first` is the pad)."""
    ids = torch.randint(last_specials, vocab, (2, ctx), dtype=torch.int32)
    ids[:, 12:] = first
    return ids


def make_siglip(out: Path, tok: Tokenizer, act_kwargs: dict | None, specials: dict) -> None:
    config = siglip_config(tok.get_vocab_size(), act_kwargs)
    model = open_clip.CustomTextCLIP(
        embed_dim=config["embed_dim"], vision_cfg=config["vision_cfg"], text_cfg=config["text_cfg"], init_logit_bias=-10
    ).eval()
    save_tokenizer(tok, out / "textual", specials, 64)
    write_json(out / "config.json", config)
    (out / "visual").mkdir(parents=True)
    write_json(out / "visual" / "preprocess_cfg.json", SIGLIP_PREPROCESS)
    pad = tok.token_to_id(specials["pad_token"])
    with torch.no_grad():
        image = torch.randn(2, 3, 224, 224)
        text = random_ids(tok.get_vocab_size(), 64, pad, 4)
        export(Visual(model), {"image": image}, out / "visual" / "model.onnx")
        export(Textual(model), {"text": text}, out / "textual" / "model.onnx")
        check_export(out / "visual" / "model.onnx", {"image": image}, Visual(model)(image).numpy())
        check_export(out / "textual" / "model.onnx", {"text": text}, Textual(model)(text).numpy())


def make_xlmr(out: Path) -> None:
    from transformers import XLMRobertaConfig

    tok = xlmr_tokenizer()
    specials = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
    }
    hf_config = XLMRobertaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=4 * WIDTH,
        max_position_embeddings=514,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    # Given a config object, open_clip's HF tower builds the model from it and never asks the hub.
    text = HFTextEncoder("xlm-roberta-base", output_dim=WIDTH, config=hf_config, pooler_type="mean_pooler", proj_type="mlp")
    clip = open_clip.CLIP(
        embed_dim=WIDTH,
        vision_cfg=dict(image_size=224, layers=2, width=WIDTH, patch_size=32, head_width=32),
        text_cfg=dict(context_length=77, vocab_size=16, width=16, heads=1, layers=1),
    ).eval()
    # HFTextEncoder.eval() leaves the HF model in training mode (dropout on) with transformers 5.
    text.eval()
    text.transformer.eval()
    config = {
        "embed_dim": WIDTH,
        "vision_cfg": {"image_size": 224, "layers": 2, "width": WIDTH, "patch_size": 32, "head_width": 32},
        "text_cfg": {
            "hf_model_name": "xlm-roberta-base",
            "hf_tokenizer_name": "xlm-roberta-base",
            "hf_pooler_type": "mean_pooler",
            "hf_proj_type": "mlp",
            "hf_model_config": hf_config.to_diff_dict(),
        },
    }
    (out / "visual").mkdir(parents=True)
    save_tokenizer(tok, out / "textual", specials, 77)
    write_json(out / "config.json", config)
    write_json(out / "visual" / "preprocess_cfg.json", openai_preprocess(224))
    with torch.no_grad():
        image = torch.randn(2, 3, 224, 224)
        ids = random_ids(tok.get_vocab_size(), 77, 1, 5)
        mask = (ids != 1).to(torch.int32)
        visual = Visual(clip)
        textual = MaskedTextual(text)
        export(visual, {"image": image}, out / "visual" / "model.onnx")
        export(textual, {"input_ids": ids, "attention_mask": mask}, out / "textual" / "model.onnx")
        check_export(out / "visual" / "model.onnx", {"image": image}, visual(image).numpy())
        feed = {"input_ids": ids, "attention_mask": mask}
        check_export(out / "textual" / "model.onnx", feed, textual(ids, mask).numpy())
        # The exported graph is open_clip's HF tower: the same vector as its own forward.
        assert torch.allclose(F.normalize(text(ids.long()), dim=-1), textual(ids, mask), atol=1e-5)


def build(family: str, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    print(f"{family} -> {out}")
    if family == "siglip":
        specials = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
        make_siglip(out, siglip_tokenizer(), None, specials)
    elif family == "siglip2":
        specials = {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"}
        make_siglip(out, siglip2_tokenizer(), {"approximate": "tanh"}, specials)
    else:
        make_xlmr(out)


FAMILIES = {"siglip": "tiny-siglip", "siglip2": "tiny-siglip2", "xlmr": "tiny-xlmr"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fixtures", type=Path, help="tests/fixtures: the bundles go to tiny-siglip/, tiny-siglip2/, tiny-xlmr/")
    ap.add_argument("--family", choices=sorted(FAMILIES), action="append", help="only these (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.backends.mha.set_fastpath_enabled(False)
    for family in args.family or list(FAMILIES):
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)
        build(family, args.fixtures / FAMILIES[family])


if __name__ == "__main__":
    main()

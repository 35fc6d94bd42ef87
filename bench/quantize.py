"""Makes an int8 copy of a model bundle: ONNX Runtime's dynamic quantization (weights to int8,
activations quantized at run time) of both towers, every other file copied unchanged.

    python bench/quantize.py SOURCE_BUNDLE DEST_BUNDLE

The bench (scripts/bench) times it beside fp32 and reports its size and its cosine to the fp32
embeddings on the fixture images and queries. It is an option, not the default (see docs/benchmarks.md).
"""

import shutil
import sys
from pathlib import Path

from onnxruntime.quantization import QuantType, quantize_dynamic


def main():
    source, dest = Path(sys.argv[1]), Path(sys.argv[2])
    if (dest / "visual" / "model.onnx").exists() and (dest / "textual" / "model.onnx").exists():
        return
    for path in source.rglob("*"):
        if path.is_file() and path.name != "model.onnx":
            target = dest / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    for tower in ("visual", "textual"):
        (dest / tower).mkdir(parents=True, exist_ok=True)
        partial = dest / tower / "model.onnx.part"
        quantize_dynamic(source / tower / "model.onnx", partial, weight_type=QuantType.QInt8)
        partial.rename(dest / tower / "model.onnx")
        print(f"quantized {tower}: {(source / tower / 'model.onnx').stat().st_size / 2**20:.1f} MB -> "
              f"{(dest / tower / 'model.onnx').stat().st_size / 2**20:.1f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()

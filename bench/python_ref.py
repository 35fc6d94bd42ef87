"""The Python reference, timed the way clip-bench times this project: Pillow + the reference
preprocessing (tests/reference/golden.py) + onnxruntime-python, same model, inputs and threads.

Usage: python bench/python_ref.py images|texts MODEL_DIR THREADS ITERS FILE...|QUERIES
Prints one JSON object (per-image / per-query milliseconds: median, min, max).
"""

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "reference"))
from golden import reference_ids, reference_tensor  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def stats(samples):
    samples = sorted(samples)
    return {"median_ms": statistics.median(samples), "min_ms": samples[0], "max_ms": samples[-1], "runs": len(samples), "samples_ms": samples}


def timed(iters, per, f):
    f()
    out = []
    for _ in range(iters):
        start = time.perf_counter()
        f()
        out.append((time.perf_counter() - start) * 1000.0 / per)
    return stats(out)


def session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def images(model, threads, iters, files):
    cfg = json.loads((model / "visual" / "preprocess_cfg.json").read_text())
    sess = session(model / "visual" / "model.onnx", threads)
    name = sess.get_inputs()[0].name
    out = {}
    for batch in (1, 8):
        chunks = [files[i : i + batch] for i in range(0, len(files), batch)]

        def run():
            for chunk in chunks:
                tensors = [reference_tensor(Path(f), cfg)[0] for f in chunk]
                sess.run(None, {name: np.stack(tensors)})

        out[f"batch{batch}"] = timed(iters, len(files), run)
    out["prepare_only"] = timed(iters, len(files), lambda: [reference_tensor(Path(f), cfg) for f in files])
    return out


def texts(model, threads, iters, queries):
    config = json.loads((model / "config.json").read_text())
    ctx = config.get("text_cfg", {}).get("context_length", 77)
    pad = json.loads((model / "textual" / "tokenizer_config.json").read_text())["pad_token"]
    tok = Tokenizer.from_file(str(model / "textual" / "tokenizer.json"))
    reference_ids("warm up", tok, ctx, pad)  # configures padding and truncation once

    def ids(q):
        return tok.encode(" ".join(q.split())).ids

    sess = session(model / "textual" / "model.onnx", threads)
    name = sess.get_inputs()[0].name

    def run():
        for q in queries:
            sess.run(None, {name: np.asarray([ids(q)], dtype=np.int32)})

    return {
        "batch1": timed(iters, len(queries), run),
        "tokenize_only": timed(iters, len(queries), lambda: [ids(q) for q in queries]),
    }


def main():
    command, model, threads, iters, *rest = sys.argv[1:]
    model, threads, iters = Path(model), int(threads), int(iters)
    if command == "images":
        result = images(model, threads, iters, rest)
    else:
        result = texts(model, threads, iters, Path(rest[0]).read_text().splitlines())
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Runs the benchmark side by side and writes bench/results/report.{json,md}.

Called by scripts/bench (which builds the binaries and prepares the model, inputs and venv).
Every timing is a median over repeated runs with min-max; ratios compare numbers from this
one run, on the same model, inputs and thread count. Nothing here asserts a speed.
"""

import argparse
import io
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd):
    """Runs a command, returns (parsed JSON stdout, peak RSS in MB of that process)."""
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit(f"benchmark step failed: {' '.join(map(str, cmd))}")
    return json.loads(out), usage.ru_maxrss / 1024.0


def merged(results):
    """One measurement's results from several rounds as one: all samples, and each round's median."""
    if isinstance(results[0], dict) and "samples_ms" not in results[0]:
        return {k: merged([r[k] for r in results]) for k in results[0]}
    samples = sorted(x for r in results for x in r["samples_ms"])
    return {"median_ms": statistics.median(samples), "min_ms": samples[0], "max_ms": samples[-1], "runs": len(samples),
            "round_medians_ms": [r["median_ms"] for r in results]}


def zipped_size(path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(path, "bootstrap")
    return buf.tell()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lite_settings(path):
    """The `NAME=value` lines of scripts/milvus-lite.env (the stack's Milvus Lite settings)."""
    lines = (l.strip() for l in Path(path).read_text().splitlines())
    return dict(l.split("=", 1) for l in lines if l and not l.startswith("#"))


def lite_server(python, data_dir, settings, log):
    """Starts a private Milvus Lite server on a free port with `settings` over Lite's defaults; returns (process, URI)."""
    shutil.rmtree(data_dir, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MILVUS_LITE_")}
    env.update(settings)
    port = free_port()
    proc = subprocess.Popen([python, "-m", "milvus_lite", "server", "--data-dir", data_dir, "--host", "127.0.0.1",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                sys.exit(f"Milvus Lite did not start; see {log.name}")
            time.sleep(0.5)


def milvus_flush(a, queries):
    """The flush policy side by side: two private Milvus Lite servers, one with Lite's defaults
    (before: never flushed by us), one with the stack's settings and the policy (after)."""
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    sides, procs = {}, []
    try:
        for side, settings in (("before", {}), ("after", lite_settings(a.lite_settings))):
            data = work / f"milvus-{side}"
            log = open(work / f"milvus-{side}.log", "w")
            proc, uri = lite_server(a.lite_python, data, settings, log)
            procs.append((proc, data))
            sides[side] = f"{uri},{data}"
        result, _ = run([a.bench_bin, "milvus-flush", a.model, a.threads, a.calls, a.stack_env, queries, a.flush_sizes,
                         sides["before"], sides["after"]])
    finally:
        for proc, data in procs:
            proc.terminate()
            proc.wait(timeout=30)
            shutil.rmtree(data, ignore_errors=True)
    result["lite_settings"] = {"before": "Milvus Lite's defaults", "after": lite_settings(a.lite_settings)}
    return result


def flush_ratios(mf):
    """Milvus's p50 per handler call before over after the flush policy, and after's p50 in ms."""
    ratios = {}
    for size in mf["sizes"]:
        for f in ("unfiltered", "prefix"):
            b, af = size["before"][f]["milvus"]["p50_ms"], size["after"][f]["milvus"]["p50_ms"]
            ratios[f"Milvus share of search p50, {size['vectors']} vectors, {f}: before over after the flush policy"] = b / af
            ratios[f"Milvus share of search p50, {size['vectors']} vectors, {f}, after: ms"] = af
    return ratios


def flush_markdown(mf):
    lines = ["", f"## Milvus Lite flush policy: search handler over synthetic {mf['dim']}-d vectors, k = 10, ms", "",
             f"Two private Milvus Lite servers side by side, queries alternating: before = Lite's defaults, never flushed "
             f"by us; after = {', '.join(f'{k}={v}' for k, v in mf['lite_settings']['after'].items())} and a flush when the bulk insert ends (as backfill does). "
             f"Both timed once Lite had indexed every segment (its background compaction and index builds done). Prefix filter: {mf['prefix_share']:.0%} of "
             f"the keys.", "",
             "| vectors | filter | Milvus p50 before | Milvus p50 after | before / after | handler p50 before | handler p50 after | queries |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for size in mf["sizes"]:
        for f in ("unfiltered", "prefix"):
            b, af = size["before"][f], size["after"][f]
            lines.append(f"| {size['vectors']:,} | {f} | {b['milvus']['p50_ms']:.1f} | {af['milvus']['p50_ms']:.1f} | "
                         f"{b['milvus']['p50_ms'] / af['milvus']['p50_ms']:.1f}× | {b['handler']['p50_ms']:.1f} | "
                         f"{af['handler']['p50_ms']:.1f} | {size['calls']} |")
    lines += ["", "| vectors | side | insert, s | flush, ms | Lite indexing afterwards, s | segments |", "|---:|---|---:|---:|---:|---:|"]
    for size in mf["sizes"]:
        for side in ("before", "after"):
            x = size[side]
            settled = "" if x["settled"] else " (not settled)"
            lines.append(f"| {size['vectors']:,} | {side} | {x['insert_s']:.1f} | {x['flush_ms']:.0f} | {x['settle_s']:.0f}{settled} | {x['segments']} |")
    return lines


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1), "os": platform.platform()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--profile", default="release", help="the cargo profile the binaries were built with")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--inputs", type=Path, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--iters", type=int, required=True)
    ap.add_argument("--rounds", type=int, required=True, help="rounds of the side-by-side image and text comparisons")
    ap.add_argument("--python", required=True)
    ap.add_argument("--bench-bin", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--stack-env", type=Path, required=True)
    ap.add_argument("--vectors", type=int, required=True)
    ap.add_argument("--calls", type=int, required=True)
    ap.add_argument("--int8-model", type=Path)
    ap.add_argument("--lite-python", required=True, help="a Python with milvus-lite (the stack's venv)")
    ap.add_argument("--lite-settings", required=True, help="scripts/milvus-lite.env")
    ap.add_argument("--flush-sizes", required=True, help="vector counts of the flush comparison, e.g. 10000,100000")
    ap.add_argument("--work", required=True, help="a scratch folder for the private Milvus Lite servers")
    ap.add_argument("--only", choices=["milvus-flush"], help="run only this part")
    a = ap.parse_args()
    common = [a.model, a.threads, a.iters]
    ref = [a.python, ROOT / "bench" / "python_ref.py"]
    report = {"label": a.label, "model": a.model.name, "threads": a.threads, "iterations": a.iters, "rounds": a.rounds,
              "cargo_profile": a.profile, "machine": machine()}

    queries = ROOT / ".local" / "bench" / "queries.txt"
    queries.parent.mkdir(parents=True, exist_ok=True)
    golden = json.loads((ROOT / "tests" / "fixtures" / "golden" / "texts.json").read_text())
    queries.write_text("\n".join(" ".join(t["text"].split()) for t in golden["texts"]) + "\n")
    if a.only == "milvus-flush":
        print(f"Milvus Lite flush policy over {a.flush_sizes} vectors", file=sys.stderr)
        report["milvus_flush"] = milvus_flush(a, queries)
        report["ratios"] = {k: round(v, 3) for k, v in flush_ratios(report["milvus_flush"]).items()}
        write(a, report, flush_markdown_report(report))
        return
    sets = {name: sorted(str(p) for p in (a.inputs / name).iterdir()) for name in ("photo512", "jpeg12mp", "png1080")}

    # The side-by-side comparisons run in rounds, each round measuring every side once, so that a
    # slow minute on this noisy machine hits all sides alike; each ratio is then taken per round.
    rounds = []
    for r in range(a.rounds):
        rd = {"images": {}}
        for name, files in sets.items():
            print(f"round {r + 1}/{a.rounds}: images {name} ({len(files)} files)", file=sys.stderr)
            rust, rust_rss = run([a.bench_bin, "images", *common, *files])
            full, _ = run([a.bench_bin, "images-full-decode", *common, *files])
            rust["batch8_full_decode"] = full["batch8"]
            py, py_rss = run([*ref, "images", *common, *files])
            rd["images"][name] = {"rust": rust, "python": py, "rust_peak_rss_mb": rust_rss, "python_peak_rss_mb": py_rss}
        print(f"round {r + 1}/{a.rounds}: texts, bare onnxruntime", file=sys.stderr)
        rd["texts"] = {"rust": run([a.bench_bin, "texts", *common, queries])[0], "python": run([*ref, "texts", *common, queries])[0]}
        rd["bare"], _ = run([a.bench_bin, "bare", *common])
        print(f"round {r + 1}/{a.rounds}: int8 model", file=sys.stderr)
        int8 = [a.int8_model, a.threads, a.iters]
        rd["int8"] = {"images_photo512": run([a.bench_bin, "images", *int8, *sets["photo512"]])[0],
                      "texts": run([a.bench_bin, "texts", *int8, queries])[0]}
        rounds.append(rd)
    images = {
        name: {
            "files": len(files),
            "rust": merged([rd["images"][name]["rust"] for rd in rounds]),
            "python": merged([rd["images"][name]["python"] for rd in rounds]),
            "rust_peak_rss_mb": max(rd["images"][name]["rust_peak_rss_mb"] for rd in rounds),
            "python_peak_rss_mb": max(rd["images"][name]["python_peak_rss_mb"] for rd in rounds),
        }
        for name, files in sets.items()
    }
    report["images"] = images
    report["texts"] = {"queries": len(golden["texts"]), "rust": merged([rd["texts"]["rust"] for rd in rounds]), "python": merged([rd["texts"]["python"] for rd in rounds])}
    report["bare"] = merged([rd["bare"] for rd in rounds])
    print("init", file=sys.stderr)
    report["init"], _ = run([a.bench_bin, "init", *common])
    # The functions were built beside the bench binary, with the same cargo profile.
    binaries = Path(a.bench_bin).parent
    for function in ("ingest", "search"):
        cold, _ = run([a.bench_bin, "init-process", *common, binaries / function])
        report["init"][f"{function}_process_start_to_ready"] = cold["function"]
        report["init"][f"{function}_bare_session_process"] = cold["bare_session_process"]
    print("int8 model: cosine to fp32", file=sys.stderr)
    fixtures = sorted(str(p) for p in (ROOT / "tests" / "fixtures" / "images").iterdir())
    report["int8"] = {
        "images_photo512": merged([rd["int8"]["images_photo512"] for rd in rounds]),
        "texts": merged([rd["int8"]["texts"] for rd in rounds]),
        "cosine_to_fp32": run([a.bench_bin, "cosine", *common, a.int8_model, queries, *fixtures])[0],
        "model_mb": {t: round((a.int8_model / t / "model.onnx").stat().st_size / 2**20, 1) for t in ("visual", "textual")},
    }
    print(f"search handler over {a.vectors} vectors, {a.calls} queries", file=sys.stderr)
    report["search_handler"], _ = run([a.bench_bin, "search", a.model, a.threads, a.calls, a.stack_env, queries, a.vectors])
    print(f"Milvus Lite flush policy over {a.flush_sizes} vectors", file=sys.stderr)
    report["milvus_flush"] = milvus_flush(a, queries)
    print("ingest per image", file=sys.stderr)
    ingest_files = sorted(str(p) for p in (a.inputs / "jpeg12mp").iterdir())
    report["ingest_per_image"], _ = run([a.bench_bin, "ingest", *common, a.stack_env, *ingest_files])

    model_bytes = {t: (a.model / t / "model.onnx").stat().st_size for t in ("visual", "textual")}
    report["sizes"] = {
        "model_mb": {t: round(b / 2**20, 1) for t, b in model_bytes.items()},
        "binary_mb": {f: round((binaries / f).stat().st_size / 2**20, 1) for f in ("ingest", "search")},
        "zip_mb": {f: round(zipped_size(binaries / f) / 2**20, 1) for f in ("ingest", "search")},
    }

    med = lambda x: x["median_ms"]
    ratios, spread = {}, {}

    def per_round(label, f):
        """The median over rounds of a ratio taken within each round, and its range."""
        values = sorted(f(rd) for rd in rounds)
        ratios[label] = statistics.median(values)
        spread[label] = [values[0], values[-1]]

    for name in sets:
        for b in ("batch1", "batch8"):
            per_round(f"image {name} {b}: speed-up over Python", lambda rd: med(rd["images"][name]["python"][b]) / med(rd["images"][name]["rust"][b]))
    for name in ("photo512", "jpeg12mp"):
        per_round(f"image {name} batch8: time over bare ORT", lambda rd: med(rd["images"][name]["rust"]["batch8"]) / med(rd["bare"]["image_batch8"]))
    per_round("image jpeg12mp batch8: reduced JPEG decode speed-up", lambda rd: med(rd["images"]["jpeg12mp"]["rust"]["batch8_full_decode"]) / med(rd["images"]["jpeg12mp"]["rust"]["batch8"]))
    per_round("text: speed-up over Python", lambda rd: med(rd["texts"]["python"]["batch1"]) / med(rd["texts"]["rust"]["batch1"]))
    per_round("text: time over bare ORT", lambda rd: med(rd["texts"]["rust"]["batch1"]) / med(rd["bare"]["text_batch1"]))
    ratios["init image tower: over bare session"] = med(report["init"]["image_tower_load"]) / med(report["init"]["bare_session_image"])
    ratios["init text tower: over bare session"] = med(report["init"]["text_tower_load"]) / med(report["init"]["bare_session_text"])
    q = report["int8"]
    per_round("int8 image path photo512 batch8: speed-up over fp32", lambda rd: med(rd["images"]["photo512"]["rust"]["batch8"]) / med(rd["int8"]["images_photo512"]["batch8"]))
    per_round("int8 text path: speed-up over fp32", lambda rd: med(rd["texts"]["rust"]["batch1"]) / med(rd["int8"]["texts"]["batch1"]))
    ratios["int8 worst cosine to fp32, fixture images"] = q["cosine_to_fp32"]["images"]["min"]
    ratios["int8 worst cosine to fp32, queries"] = q["cosine_to_fp32"]["texts"]["min"]
    i = report["init"]
    ratios["init ingest function, process start to ready: over a bare image-session process"] = med(i["ingest_process_start_to_ready"]) / med(i["ingest_bare_session_process"])
    ratios["init search function, process start to ready: over a bare text-session process"] = med(i["search_process_start_to_ready"]) / med(i["search_bare_session_process"])
    sh = report["search_handler"]
    ratios["search handler p50 over (bare text inference + Milvus search) p50"] = sh["handler"]["p50_ms"] / (med(report["bare"]["text_batch1"]) + sh["milvus_search"]["p50_ms"])
    ratios.update(flush_ratios(report["milvus_flush"]))
    budget = model_bytes["visual"] / 2**20 + 100
    ratios["peak RSS image path (jpeg12mp) over visual model + 100 MB"] = images["jpeg12mp"]["rust_peak_rss_mb"] / budget
    report["ratios"] = {k: round(v, 3) for k, v in ratios.items()}
    report["ratio_range_over_rounds"] = {k: [round(x, 3) for x in v] for k, v in spread.items()}

    write(a, report, markdown(report))


def write(a, report, text):
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"report-{a.label}.json").write_text(json.dumps(report, indent=2) + "\n")
    (a.out / f"report-{a.label}.md").write_text(text)
    print(text)


def flush_markdown_report(r):
    """The report of a run with `--only milvus-flush`."""
    m = r["machine"]
    lines = [f"# Benchmark: {r['label']} ({r['model']} text tower, {r['threads']} threads, {r['cargo_profile']} build)", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}.", "",
             "## Ratios (this run)", "", "| comparison | value |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} ms |" if k.endswith(": ms") else f"| {k} | {v:.2f}× |" for k, v in r["ratios"].items()]
    return "\n".join(lines + flush_markdown(r["milvus_flush"]) + [""])


def markdown(r):
    fmt = lambda s: f"{s['median_ms']:.2f} ({s['min_ms']:.2f}–{s['max_ms']:.2f})"
    m = r["machine"]
    profile = r.get("cargo_profile", "release")  # reports written before the profile was recorded were release
    lines = [
        f"# Benchmark: {r['label']} ({r['model']}, {r['threads']} threads, {r['rounds']} rounds of {r['iterations']} runs, "
        f"{profile} build)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}.",
        "",
        "## Ratios (this run)",
        "",
        f"Ratios with a range were measured in {r['rounds']} interleaved rounds (every side once a round): the median",
        "of the per-round ratios, then their min–max. The others come from one alternating run.",
        "",
        "| comparison | ratio | range over rounds |",
        "|---|---|---|",
    ]
    def ratio(k, v):
        if "cosine" in k:
            return f"| {k} | {v:.4f} | |"
        if k.endswith(": ms"):
            return f"| {k} | {v:.1f} ms | |"
        lo, hi = r["ratio_range_over_rounds"].get(k, (None, None))
        return f"| {k} | {v:.2f}× | {lo:.2f}–{hi:.2f} |" if lo is not None else f"| {k} | {v:.2f}× | |"
    lines += [ratio(k, v) for k, v in r["ratios"].items()]
    lines += ["", "## Image path, ms per image: median (min–max)", "",
              "| inputs | Rust batch 1 | Rust batch 8 | Rust batch 8, full JPEG decode | Python batch 1 | Python batch 8 | Rust decode+preprocess | Python decode+preprocess | peak RSS Rust / Python (MB) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, x in r["images"].items():
        rs, py = x["rust"], x["python"]
        lines.append(f"| {name} ({x['files']}) | {fmt(rs['batch1'])} | {fmt(rs['batch8'])} | {fmt(rs['batch8_full_decode'])} | {fmt(py['batch1'])} | {fmt(py['batch8'])} | {fmt(rs['prepare_only'])} | {fmt(py['prepare_only'])} | {x['rust_peak_rss_mb']:.0f} / {x['python_peak_rss_mb']:.0f} |")
    b = r["bare"]
    lines += ["", "## Bare ONNX Runtime (pre-made inputs), ms per item", "",
              "| tower | batch 1 | batch 8 |", "|---|---|---|",
              f"| image | {fmt(b['image_batch1'])} | {fmt(b['image_batch8'])} |",
              f"| text | {fmt(b['text_batch1'])} | {fmt(b['text_batch8'])} |"]
    t = r["texts"]
    lines += ["", f"## Text path ({t['queries']} queries), ms per query", "",
              "| | tokenize + infer | tokenize only |", "|---|---|---|",
              f"| Rust | {fmt(t['rust']['batch1'])} | {fmt(t['rust']['tokenize_only'])} |",
              f"| Python | {fmt(t['python']['batch1'])} | {fmt(t['python']['tokenize_only'])} |"]
    i = r["init"]
    lines += ["", "## Init, ms", "", "| | image | text |", "|---|---|---|",
              f"| bare session creation | {fmt(i['bare_session_image'])} | {fmt(i['bare_session_text'])} |",
              f"| tower load (config, tokenizer, session, checks) | {fmt(i['image_tower_load'])} | {fmt(i['text_tower_load'])} |"]
    p = lambda x: f"{x['p50_ms']:.2f} / {x['p95_ms']:.2f} / {x['p99_ms']:.2f} ({x['min_ms']:.2f}–{x['max_ms']:.2f})"
    lines += [f"| bare process: start to session ready | {fmt(i['ingest_bare_session_process'])} | {fmt(i['search_bare_session_process'])} |",
              f"| function from process start to ready (runtime API) | {fmt(i['ingest_process_start_to_ready'])} (ingest) | {fmt(i['search_process_start_to_ready'])} (search) |"]
    sh = r["search_handler"]
    indexed = f" (flushed after the insert, timed once Lite had indexed them, {sh['indexing_s']:.0f} s later)" if sh.get("flushed") else ""
    lines += ["", f"## Search handler over {sh['vectors']} vectors in Milvus Lite{indexed}, k = {sh['k']}, {sh['handler']['calls']} queries, ms", "",
              "| stage | p50 / p95 / p99 (min–max) |", "|---|---|",
              f"| handler end to end (shared::api::handle) | {p(sh['handler'])} |",
              f"| tokenize | {p(sh['tokenize'])} |", f"| text inference | {p(sh['infer'])} |",
              f"| Milvus search | {p(sh['milvus_search'])} |", f"| presign 10 URLs | {p(sh['presign_10'])} |"]
    ing = r["ingest_per_image"]
    lines += flush_markdown(r["milvus_flush"])
    lines += ["", f"## Ingest per image ({ing['images']} phone JPEGs, 12 MP, one at a time), ms", "",
              "| stage | p50 (min–max) |", "|---|---|"]
    lines += [f"| {name} | {ing[key]['p50_ms']:.2f} ({ing[key]['min_ms']:.2f}–{ing[key]['max_ms']:.2f}) |" for name, key in (
        ("S3 GetObject (SeaweedFS)", "get"), ("decode (reduced JPEG)", "decode"), ("preprocess (resize, crop)", "preprocess"),
        ("inference", "infer"), ("Milvus upsert", "upsert"), ("the use case for one object (Ingestor::apply)", "use_case"))]
    q = r["int8"]
    c = q["cosine_to_fp32"]
    lines += ["", "## int8 (dynamic quantization, bench/quantize.py) vs fp32", "",
              "| | fp32 | int8 |", "|---|---|---|",
              f"| image path photo512 batch 8, ms per image | {fmt(r['images']['photo512']['rust']['batch8'])} | {fmt(q['images_photo512']['batch8'])} |",
              f"| text path, ms per query | {fmt(r['texts']['rust']['batch1'])} | {fmt(q['texts']['batch1'])} |",
              f"| visual / textual model, MB | {r['sizes']['model_mb']['visual']} / {r['sizes']['model_mb']['textual']} | {q['model_mb']['visual']} / {q['model_mb']['textual']} |",
              f"| cosine to fp32, {c['images']['count']} fixture images: worst (mean) | | {c['images']['min']:.4f} ({c['images']['mean']:.4f}), worst {Path(c['images']['worst']).name} |",
              f"| cosine to fp32, {c['texts']['count']} queries: worst (mean) | | {c['texts']['min']:.4f} ({c['texts']['mean']:.4f}) |"]
    s = r["sizes"]
    lines += ["", "## Sizes, MB", "", "| | ingest | search |", "|---|---|---|",
              f"| {profile} binary | {s['binary_mb']['ingest']} | {s['binary_mb']['search']} |",
              f"| zipped | {s['zip_mb']['ingest']} | {s['zip_mb']['search']} |",
              f"| model tower | {s['model_mb']['visual']} | {s['model_mb']['textual']} |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

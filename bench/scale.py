"""Scale and cost (issue 14, item 4): runs clip-bench's stack measurements and writes
bench/results/scale-LABEL.{json,md}, every figure with the command that produced it.

  - ingest through the queue path (SQS batches of 1, 5, 10) against the direct path: images/s and
    CPU-seconds per 1,000 images, in interleaved rounds, ratios taken within each round;
  - the model fetched from S3 at init: sequential whole-file GETs against ranged GETs in parallel,
    and the ingest function's cold start with the model from S3 against one from a layer;
  - `clip-search backfill` of a bucket of generated photos, end to end on the local stack;
  - the search handler's duration over a small collection;
  - an AWS Lambda cost estimate per 1,000 images ingested and per 1,000 searches from those
    durations, the template's memory sizes and the published prices below.

Called by scripts/bench (which builds the binaries and prepares the model, the inputs and the
stack). Nothing here asserts a speed.
"""

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

from run import machine  # bench/run.py, beside this file

ROOT = Path(__file__).resolve().parent.parent

# Lambda on-demand prices, US East (N. Virginia), first tier (up to 6 billion GB-s a month on x86,
# 7.5 billion on Arm). Read 2026-11-30. The official page (aws.amazon.com/lambda/pricing) renders
# its rate table client-side, so the stored copy that was read shows the tiers but not the
# figures; the figures come from two secondary sources that cite it and agree.
PRICES = {
    "read": "2026-11-30",
    "region": "us-east-1",
    "gb_second": {"x86_64": 0.0000166667, "arm64": 0.0000133334},
    "per_request": 0.20 / 1e6,
    "sources": [
        "https://aws.amazon.com/lambda/pricing/ (structure and tiers; the rate table is not in the page text)",
        "https://cloudchipr.com/blog/aws-lambda-pricing (x86 $0.0000166667 / GB-s, Arm $0.0000133334 / GB-s, first tier)",
        "https://app.unpkg.com/artillery@2.0.28/files/lib/platform/aws-lambda/prices.js (base x86_64 1666670, arm64 1333340 per 1e11 GB-s)",
        "https://git.mcrn.ar/mariano/lambda_local_runner/src/commit/957e45b8adae23ce50b966346229585b5df18b4d/docs/lambdas-md/lambda-13-cost.md ($0.20 per 1M requests, both architectures)",
    ],
}
# template.yaml's defaults (IngestMemorySize, SearchMemorySize).
INGEST_MB, SEARCH_MB = 3008, 2048


def run(cmd):
    """Runs a clip-bench step; its result is the last line of stdout (the ingest handler also
    prints CloudWatch metric lines there, as in Lambda)."""
    cmd = [str(c) for c in cmd]
    print("$ " + " ".join(cmd[:6]) + (" …" if len(cmd) > 6 else ""), file=sys.stderr)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"benchmark step failed: {' '.join(cmd)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def shown(cmd):
    """A command as the report shows it: paths relative to the repository, inputs summarised."""
    parts = []
    for c in map(str, cmd):
        p = Path(c)
        if p.is_absolute() and ROOT in p.parents:
            c = str(p.relative_to(ROOT))
        parts.append(c)
    files = [p for p in parts if p.endswith((".jpg", ".png"))]
    if len(files) > 2:
        first = parts.index(files[0])
        parts = parts[:first] + [f"<{len(files)} files in {Path(files[0]).parent}>"] + parts[first + len(files):]
    return " ".join(parts)


def cost(duration_s, memory_mb, requests):
    """Dollars for `requests` invocations taking `duration_s` in all, at `memory_mb`."""
    gb_s = memory_mb / 1024 * duration_s
    return {arch: round(gb_s * price + requests * PRICES["per_request"], 6) for arch, price in PRICES["gb_second"].items()} | {
        "gb_seconds": round(gb_s, 3), "requests": requests}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--inputs", type=Path, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--images", type=int, required=True, help="objects per queue pass")
    ap.add_argument("--backfill", type=int, required=True, help="objects to backfill (0: skip)")
    ap.add_argument("--fetch-mb", type=int, required=True, help="size of the model file fetched from S3")
    ap.add_argument("--search-vectors", type=int, required=True)
    ap.add_argument("--search-calls", type=int, required=True)
    ap.add_argument("--bin-dir", type=Path, required=True)
    ap.add_argument("--stack-env", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    bench = a.bin_dir / "clip-bench"
    phones = sorted(str(p) for p in (a.inputs / "jpeg12mp").iterdir())
    photos = sorted(str(p) for p in (a.inputs / "photo512").iterdir())
    started = datetime.datetime.now(datetime.timezone.utc)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, stdout=subprocess.PIPE, text=True).stdout.strip()
    report = {"label": a.label, "model": a.model.name, "threads": a.threads, "cargo_profile": a.profile,
              "started": started.isoformat(timespec="seconds"), "commit": git, "machine": machine(), "commands": {}}

    def step(name, cmd):
        report["commands"][name] = shown(cmd)
        report[name] = run(cmd)

    step("queue", [bench, "queue", a.model, a.threads, a.rounds, a.stack_env, a.images, *phones])
    step("model_fetch", [bench, "model-fetch", a.model, a.threads, a.rounds, a.stack_env, a.fetch_mb])
    step("cold_start", [bench, "cold-start", a.model, a.threads, a.rounds, a.stack_env, a.bin_dir / "ingest"])
    queries = ROOT / ".local" / "bench" / "queries.txt"
    queries.parent.mkdir(parents=True, exist_ok=True)
    golden = json.loads((ROOT / "tests" / "fixtures" / "golden" / "texts.json").read_text())
    queries.write_text("\n".join(" ".join(t["text"].split()) for t in golden["texts"]) + "\n")
    step("search", [bench, "search", a.model, a.threads, a.search_calls, a.stack_env, queries, a.search_vectors])
    if a.backfill > 0:
        step("backfill", [bench, "backfill", a.model, a.threads, 0, a.stack_env, a.bin_dir / "clip-search", a.backfill, *photos])

    # Cost: the measured wall time per image (per query) taken as the billed duration at the
    # template's memory sizes. 3008 MB gives about 1.7 vCPUs (1,769 MB is one), this machine has 2
    # cores, and arm64 was not measured: the same durations are priced on both architectures.
    estimate = {"prices": PRICES, "ingest_memory_mb": INGEST_MB, "search_memory_mb": SEARCH_MB, "ingest_per_1000_images": {},
                "search_per_1000": {}}
    for mode in ("direct", "queue_batch1", "queue_batch5", "queue_batch10"):
        m = report["queue"]["modes"][mode]
        per_image_s = m["wall_ms_per_image"]["median"] / 1000
        estimate["ingest_per_1000_images"][mode] = cost(per_image_s * 1000, INGEST_MB, 1000 // m["batch"])
    if "backfill" in report:
        b = report["backfill"]
        estimate["ingest_per_1000_images"]["backfill_cli_rate"] = cost(b["wall_s"] / b["images"] * 1000, INGEST_MB, 0)
    s = report["search"]
    estimate["search_per_1000"]["handler_p50"] = cost(s["handler"]["p50_ms"], SEARCH_MB, 1000)
    estimate["search_per_1000"]["text_inference_p50_only"] = cost(s["infer"]["p50_ms"], SEARCH_MB, 1000)
    # The same prices on the ViT-B/32 durations of the committed full report (scripts/bench), when
    # this run measured another model: ingest one 12 MP photo per invocation (the use case), search.
    committed = a.out / "report-vit-b-32.json"
    if a.label != "vit-b-32" and committed.exists():
        v = json.loads(committed.read_text())
        estimate["from_committed_vit_b_32_report"] = {
            "report": "bench/results/report-vit-b-32.json",
            "ingest_per_1000_images_batch1_use_case_p50": cost(v["ingest_per_image"]["use_case"]["p50_ms"], INGEST_MB, 1000),
            "search_per_1000_handler_p50_10000_vectors": cost(v["search_handler"]["handler"]["p50_ms"], SEARCH_MB, 1000),
            "search_per_1000_text_inference_p50_only": cost(v["search_handler"]["infer"]["p50_ms"], SEARCH_MB, 1000),
        }
    report["cost_estimate"] = estimate

    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"scale-{a.label}.json").write_text(json.dumps(report, indent=2) + "\n")
    (a.out / f"scale-{a.label}.md").write_text(markdown(report))
    print(markdown(report))


def markdown(r):
    q = r["queue"]
    lines = [f"# Scale and cost: {r['label']} ({r['model']}, {r['threads']} threads, {r['cargo_profile']} build, {r['started']}, {r['commit']})", "",
             f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, shared with other work.", "",
             f"## Ingest: direct vs queue batches ({q['images']} objects a pass, {q['rounds']} rounds, {q['inputs']} distinct 12 MP JPEGs)", "",
             f"`{r['commands']['queue']}`", "",
             "In-process: `shared::events::handle` fed what Lambda would (an S3 event per object, or SQS events of N messages); "
             "CPU is this process's getrusage (ONNX Runtime's threads included; SeaweedFS and Milvus Lite not). Median (min–max) over rounds.", "",
             "| path | invocations | images/s | CPU-s per 1,000 images | wall ms per image |", "|---|---:|---:|---:|---:|"]
    f = lambda s, d=1: f"{s['median']:.{d}f} ({s['min']:.{d}f}–{s['max']:.{d}f})"
    for mode in ("direct", "queue_batch1", "queue_batch5", "queue_batch10"):
        m = q["modes"][mode]
        lines.append(f"| {mode} | {m['invocations']} | {f(m['images_per_s'], 2)} | {f(m['cpu_s_per_1000_images'])} | {f(m['wall_ms_per_image'])} |")
    lines += ["", "| ratio (within each round) | median (min–max) |", "|---|---|"]
    lines += [f"| {k} | {f(v, 3)} |" for k, v in q["ratios"].items()]
    mf = r["model_fetch"]
    lines += ["", f"## Model fetch from S3 (SeaweedFS on this machine), {mf['model_mb']} MB file", "", f"`{r['commands']['model_fetch']}`", "",
              "| transfer | ms, median (min–max) | MB/s |", "|---|---:|---:|"]
    for name in ("sequential", "ranged_4", "ranged_8"):
        t = mf["transfers"][name]
        lines.append(f"| {name} | {t['ms']['median_ms']:.0f} ({t['ms']['min_ms']:.0f}–{t['ms']['max_ms']:.0f}) | {t['mb_per_s']:.0f} |")
    c = r["cold_start"]
    lines += ["", f"## Ingest cold start, process start to first runtime-API call (visual tower {c['visual_mb']:.1f} MB)", "",
              f"`{r['commands']['cold_start']}`", "", "| model from | ms, median (min–max) |", "|---|---:|"]
    for name in ("layer", "s3_sequential", "s3_ranged_8"):
        lines.append(f"| {name} | {c[name]['median_ms']:.0f} ({c[name]['min_ms']:.0f}–{c[name]['max_ms']:.0f}) |")
    s = r["search"]
    lines += ["", f"## Search handler over {s['vectors']} vectors, {s['handler']['calls']} queries", "", f"`{r['commands']['search']}`", "",
              f"p50 {s['handler']['p50_ms']:.1f} ms (text inference {s['infer']['p50_ms']:.1f}, Milvus Lite {s['milvus_search']['p50_ms']:.1f})."]
    if "backfill" in r:
        b = r["backfill"]
        lines += ["", f"## Backfill of {b['images']} objects (mean {b['mean_object_bytes'] / 1024:.0f} KiB)", "", f"`{r['commands']['backfill']}`", "",
                  f"{b['images_per_s']:.1f} images/s ({b['wall_s']:.1f} s; {b['cpu_s_per_1000_images']:.1f} CPU-s of the CLI per 1,000 images; "
                  f"{b['failed']} failed; upload took {b['upload_s']:.1f} s). {b['options']}."]
    e = r["cost_estimate"]
    lines += ["", f"## AWS Lambda cost estimate (prices read {e['prices']['read']}, {e['prices']['region']}; ingest {e['ingest_memory_mb']} MB, search {e['search_memory_mb']} MB)", "",
              "Measured wall time taken as billed duration; the same durations priced on both architectures (arm64 not measured).", "",
              "| what | GB-s | requests | x86_64 $ | arm64 $ |", "|---|---:|---:|---:|---:|"]
    for group, rows in (("ingest per 1,000 images", e["ingest_per_1000_images"]), ("per 1,000 searches", e["search_per_1000"])):
        for name, x in rows.items():
            lines.append(f"| {group}: {name} | {x['gb_seconds']} | {x['requests']} | {x['x86_64']:.4f} | {x['arm64']:.4f} |")
    for name, x in e.get("from_committed_vit_b_32_report", {}).items():
        if name != "report":
            lines.append(f"| ViT-B/32, {e['from_committed_vit_b_32_report']['report']}: {name} | {x['gb_seconds']} | {x['requests']} | {x['x86_64']:.4f} | {x['arm64']:.4f} |")
    lines += ["", "Sources: " + "; ".join(e["prices"]["sources"]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

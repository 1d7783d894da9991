#!/usr/bin/env python3
"""Two opu-train builds side by side: test accuracy and epoch time of the same runs.

    bench/trainer/side_by_side.py OLD_OPU_TRAIN NEW_OPU_TRAIN [--out DIR] [--quick]

Runs every (model, method, seed) of the plan with both executables back to back (old, then new,
then the next seed), so that the machine's load hits both alike, each run with a metrics file.
Per run: the final test accuracy (GCN: also the test accuracy at the best validation epoch) and
the median of its epochs' wall times (each epoch's training steps and its evaluation). Per
(model, method): the mean accuracy over seeds and the median over seeds of the epoch medians,
and the ratio new/old. Prints a table (Markdown) and writes DIR/side_by_side.json.

Used for issue 17's "the MLP and the GCN keep their results and their speed" (docs/results.md).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def plan(quick):
    seeds_mlp = [1] if quick else [1, 2, 3]
    seeds_gcn = [1, 2] if quick else [1, 2, 3, 4, 5]
    epochs_mlp = 2 if quick else 15
    runs = []
    for method in ["bp", "dfa"]:
        for seed in seeds_mlp:
            runs.append(("mlp", method, seed, ["--epochs", str(epochs_mlp)]))
    for dataset in ["cora", "citeseer"]:
        for method in ["bp", "dfa"]:
            for seed in seeds_gcn:
                runs.append((f"gcn-{dataset}", method, seed,
                             ["--model", "gcn", "--dataset", dataset]))
    return runs


def plan_timing(repeats):
    """Epoch time only: each setting at seed 1, old and new alternating `repeats` times."""
    settings = [("mlp", "bp", ["--epochs", "3"]), ("mlp", "dfa", ["--epochs", "3"]),
                ("gcn-cora", "bp", ["--model", "gcn"]), ("gcn-cora", "dfa", ["--model", "gcn"]),
                ("gcn-citeseer", "dfa", ["--model", "gcn", "--dataset", "citeseer"])]
    return [(model, method, r + 1, extra) for model, method, extra in settings
            for r in range(repeats)]


def run(exe, args, metrics):
    start = time.time()
    p = subprocess.run([exe, *args, "--metrics", metrics], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{exe} {' '.join(args)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    epochs = [json.loads(line) for line in open(metrics) if '"type":"epoch"' in line]
    return {
        "test_accuracy": summary["test_accuracy"],
        "test_at_best_val": summary.get("test_accuracy_at_best_val"),
        "epoch_s": statistics.median(e["wall_s"] for e in epochs),
        "alignment": summary.get("alignment"),
        "process_s": time.time() - start,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--out", default="out/side_by_side")
    ap.add_argument("--quick", action="store_true", help="fewer seeds and epochs (a smoke test)")
    ap.add_argument("--timing", type=int, metavar="N", default=0,
                    help="epoch time only: every setting at seed 1, old and new alternating N "
                         "times (the 'seed' column counts repeats)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    results = []
    for model, method, seed, extra in plan_timing(a.timing) if a.timing else plan(a.quick):
        run_seed = 1 if a.timing else seed
        args = [*extra, "--method", method, "--seed", str(run_seed), "--threads", "1"]
        row = {"model": model, "method": method, "seed": seed}
        for name, exe in [("old", a.old), ("new", a.new)]:
            row[name] = run(exe, args, os.path.join(a.out, f"{model}-{method}-{seed}-{name}.jsonl"))
        results.append(row)
        print(f"{model} {method} seed {seed}: old {row['old']['test_accuracy']:.4f} "
              f"{1e3 * row['old']['epoch_s']:.1f} ms/epoch, new {row['new']['test_accuracy']:.4f} "
              f"{1e3 * row['new']['epoch_s']:.1f} ms/epoch", flush=True)
    with open(os.path.join(a.out, "side_by_side.json"), "w") as f:
        json.dump({"old": a.old, "new": a.new, "runs": results, "load": os.getloadavg()}, f,
                  indent=1)
    print("\n| model | method | seeds | test acc. old | test acc. new | epoch old (ms) "
          "| epoch new (ms) | new/old |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    groups = {}
    for r in results:
        groups.setdefault((r["model"], r["method"]), []).append(r)
    for (model, method), rows in groups.items():
        acc = {k: statistics.mean(r[k]["test_accuracy"] for r in rows) for k in ("old", "new")}
        sd = {k: statistics.pstdev(r[k]["test_accuracy"] for r in rows) for k in ("old", "new")}
        t = {k: statistics.median(r[k]["epoch_s"] for r in rows) for k in ("old", "new")}
        print(f"| {model} | {method} | {len(rows)} | {100 * acc['old']:.2f} ± {100 * sd['old']:.2f} "
              f"| {100 * acc['new']:.2f} ± {100 * sd['new']:.2f} | {1e3 * t['old']:.1f} "
              f"| {1e3 * t['new']:.1f} | {t['new'] / t['old']:.3f} |")
    print(f"\nload average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()

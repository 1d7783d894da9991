#!/usr/bin/env python3
"""Summarises scripts/transformer_results.sh's runs: a Markdown table, the curves, the samples.

Usage: python3 scripts/transformer_summary.py OUT_DIR

Reads OUT_DIR/sweep/*.jsonl and OUT_DIR/runs/*.jsonl (opu-train --metrics files) and writes
  OUT_DIR/summary.md   the sweep, the final validation loss per method (mean, std and each seed),
                       alignment, tokens per second, one sample per method;
  OUT_DIR/curves.dat   validation loss against step, per method: mean, min and max over seeds;
  OUT_DIR/curves.gp    the gnuplot script that renders curves.dat as OUT_DIR/curves.svg.
Standard library only, so that it runs wherever opu-train does.
"""
import glob
import json
import math
import os
import re
import sys

METHODS = [("bp", "BP"), ("macro", "macro DFA"), ("micro", "micro DFA"), ("shallow", "shallow")]
# TinyDFA (the paper's code, unchanged) in PyTorch at the default setting, 2,000 steps, seed 0.
REFERENCE = {"bp": 1.686, "macro": 2.299, "micro": 2.371, "shallow": 2.633}


def records(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def summary_of(path):
    found = [r for r in records(path) if r.get("type") == "summary"]
    if not found:
        sys.exit(f"transformer_summary: {path} has no summary record (unfinished run?)")
    return found[-1]


def mean_std(values):
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def sweep_table(out):
    rows = ["| method | learning rate | validation nats/char |", "|---|---:|---:|"]
    for method, name in METHODS:
        runs = []
        for path in glob.glob(os.path.join(out, "sweep", f"{method}-lr*.jsonl")):
            lr = re.search(r"-lr(.+)\.jsonl$", path).group(1)
            runs.append((float(lr), lr, summary_of(path)["val_loss"]))
        best = min(runs, key=lambda r: r[2])[0] if runs else None
        for value, lr, loss in sorted(runs):
            mark = "**" if value == best else ""
            rows.append(f"| {name} | {lr} | {mark}{loss:.3f}{mark} |")
    return rows


def final_runs(out, method):
    paths = sorted(glob.glob(os.path.join(out, "runs", f"{method}-seed*.jsonl")),
                   key=lambda p: int(re.search(r"seed(\d+)", p).group(1)))
    return [(p, records(p)) for p in paths]


def final_table(out):
    rows = ["| method | learning rate | validation nats/char, mean ± std (seeds) | perplexity "
            "| reference | alignment at the end | tokens/s |",
            "|---|---:|---|---:|---:|---|---:|"]
    for method, name in METHODS:
        runs = final_runs(out, method)
        if not runs:
            continue
        summaries = [[r for r in recs if r.get("type") == "summary"][-1] for _, recs in runs]
        losses = [s["val_loss"] for s in summaries]
        mean, std = mean_std(losses)
        config = [r for r in runs[0][1] if r.get("type") == "config"][0]
        align = summaries[0].get("alignment", {})
        align_text = ", ".join(f"{k} {v:.2f}" for k, v in align.items()) if method not in (
            "bp", "shallow") else "-"
        speed = sum(s["tokens_per_s"] for s in summaries) / len(summaries)
        seeds = " / ".join(f"{v:.3f}" for v in losses)
        rows.append(f"| {name} | {config['options']['lr']:.2g} | **{mean:.3f}** ± {std:.3f} "
                    f"({seeds}) | {math.exp(mean):.2f} | {REFERENCE[method]:.3f} | {align_text} "
                    f"| {speed:.0f} |")
    return rows


def samples(out):
    lines = []
    for method, name in METHODS:
        runs = final_runs(out, method)
        if not runs:
            continue
        path, recs = runs[0]
        summary = [r for r in recs if r.get("type") == "summary"][-1]
        text = summary.get("sample", "")
        lines += [f"{name} ({os.path.basename(path)}):", "", "```", text, "```", ""]
    return lines


def write_curves(out):
    """curves.dat: one gnuplot data block per method (step, mean, min, max over seeds)."""
    blocks = []
    for method, name in METHODS:
        per_step = {}
        for _, recs in final_runs(out, method):
            for r in recs:
                if r.get("type") == "eval":
                    per_step.setdefault(r["step"], []).append(r["val_loss"])
        if not per_step:
            continue
        block = [f"# {name}"]
        for step in sorted(per_step):
            v = per_step[step]
            block.append(f"{step} {sum(v) / len(v):.5f} {min(v):.5f} {max(v):.5f}")
        blocks.append((name, "\n".join(block)))
    with open(os.path.join(out, "curves.dat"), "w") as f:
        f.write("\n\n\n".join(b for _, b in blocks) + "\n")
    plots = []
    for index, (name, _) in enumerate(blocks):
        plots.append(f"'curves.dat' index {index} using 1:3:4 with filledcurves "
                     f"fs transparent solid 0.2 lc {index + 1} notitle")
        plots.append(f"'' index {index} using 1:2 with linespoints lw 2 pt 7 ps 0.5 "
                     f"lc {index + 1} title '{name}'")
    script = f"""# Rendered by: cd {out} && gnuplot curves.gp (or scripts/transformer_results.sh)
set terminal svg size 800,500 font 'sans,12' background rgb 'white'
set output 'curves.svg'
set title 'Transformer LM on tiny Shakespeare: validation loss (mean over seeds, band = min-max)'
set xlabel 'training step'
set ylabel 'validation loss (nats per character)'
set grid
set key top right
set yrange [1.4:3.6]
plot {", ".join(plots)}
"""
    with open(os.path.join(out, "curves.gp"), "w") as f:
        f.write(script)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    write_curves(out)
    lines = ["# Transformer results", "", "## Learning-rate sweep (seed 0)", ""]
    lines += sweep_table(out)
    lines += ["", "## Final runs", ""] + final_table(out)
    lines += ["", "## Samples (temperature 0.8, seed 0)", ""] + samples(out)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

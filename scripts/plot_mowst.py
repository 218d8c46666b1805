#!/usr/bin/env python3
"""Draws the Mowst homophily sweep that scripts/mowst_tables homophily writes
(docs/results/mowst/homophily.jsonl): test accuracy against the generated
graph's measured edge homophily for the MLP alone, the GCN alone, Mowst-GCN and
Mowst*-GCN (every seed a dot, the mean a line), and, below, the share of test
nodes Mowst sends to the GCN.

    python3 scripts/plot_mowst.py docs/results/mowst/homophily.jsonl -o docs/img/mowst_homophily.png

Needs python3-matplotlib; exits 77 (skipped) without it.
"""
import argparse
import json
import os
import statistics
import sys
from collections import OrderedDict

DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "img", "mowst_homophily.png")

LABELS = OrderedDict([("mlp", "MLP"), ("gcn", "GCN"), ("mowst", "Mowst-GCN"), ("mowst-star", "Mowst*-GCN")])
COLORS = {"mlp": "tab:blue", "gcn": "tab:green", "mowst": "tab:orange", "mowst-star": "tab:red"}


def read(path):
    """{model: [(homophily, [per-seed accuracy], gnn_fraction)]} sorted by homophily."""
    runs = OrderedDict((m, []) for m in LABELS)
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)["result"]
            if r["model"] in runs:
                runs[r["model"]].append((r["homophily"], r["test_acc"], r["gnn_fraction"]))
    for m in runs:
        runs[m].sort()
    return runs


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("jsonl", help="docs/results/mowst/homophily.jsonl")
    p.add_argument("-o", "--output", default=DEFAULT_OUTPUT, help="PNG to write (default: docs/img/mowst_homophily.png)")
    args = p.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_mowst.py: matplotlib is not installed (apt-get install python3-matplotlib); skipped", file=sys.stderr)
        return 77
    runs = read(args.jsonl)
    if not any(runs.values()):
        print("plot_mowst.py: no runs in " + args.jsonl, file=sys.stderr)
        return 1
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for model, points in runs.items():
        if not points:
            continue
        hs = [h for h, _, _ in points]
        means = [100 * statistics.mean(acc) for _, acc, _ in points]
        for h, acc, _ in points:
            top.scatter([h] * len(acc), [100 * a for a in acc], color=COLORS[model], s=10, alpha=0.45)
        top.plot(hs, means, "-o", color=COLORS[model], label=LABELS[model], markersize=4)
        if model == "mowst":
            bottom.plot(hs, [g for _, _, g in points], "-o", color=COLORS[model], markersize=4,
                        label="Mowst-GCN: test nodes sent to the GCN")
    top.set_ylabel("test accuracy (%)")
    top.set_title("CSBM graphs (2000 nodes, 4 classes, degree 8, 32 features, signal 1.5):\n"
                  "accuracy against edge homophily (dots: seeds, line: mean)", fontsize=9)
    top.grid(alpha=0.3)
    top.legend(fontsize=8)
    bottom.set_xlabel("measured edge homophily")
    bottom.set_ylabel("GNN share")
    bottom.set_ylim(-0.05, 1.05)
    bottom.grid(alpha=0.3)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"plot_mowst.py: wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

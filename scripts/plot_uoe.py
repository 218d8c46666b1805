#!/usr/bin/env python3
"""Draws the per-run results that build/bin/uoe writes (--csv): one panel per
task (text: validation bits per character, lower is better; fashion: test
accuracy, higher is better), one column per variant with every seed as a dot
and the mean +- one sample standard deviation as a diamond with error bars; each label carries
the variant's forward FLOPs per token relative to dense. UoE variants are
orange; text variants that are not causal have an open marker and a "*".

    python3 scripts/plot_uoe.py docs/results/uoe/text_runs.csv docs/results/uoe/fashion_runs.csv \\
        -o docs/img/uoe_results.png

Needs python3-matplotlib; exits 77 (skipped) without it.
"""
import argparse
import csv
import os
import statistics
import sys
from collections import OrderedDict

DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "img", "uoe_results.png")


def read_runs(paths):
    """{task: OrderedDict{variant: {"values": [...], "flops": x, "causal": str}}}"""
    tasks = OrderedDict()
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                task = row["task"]
                value = float(row["bits_per_char"]) if task == "text" else float(row["accuracy"])
                v = tasks.setdefault(task, OrderedDict()).setdefault(
                    row["variant"], {"values": [], "flops": float(row["flops_per_token"]), "causal": row["causal"]})
                v["values"].append(value)
    return tasks


def mean_std(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", nargs="+", help="per-run rows written by build/bin/uoe --csv")
    p.add_argument("-o", "--output", default=DEFAULT_OUTPUT, help="PNG to write (default: docs/img/uoe_results.png)")
    args = p.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_uoe.py: matplotlib is not installed (apt-get install python3-matplotlib); skipped", file=sys.stderr)
        return 77
    tasks = read_runs(args.csv)
    if not tasks:
        print("plot_uoe.py: no rows in " + ", ".join(args.csv), file=sys.stderr)
        return 1
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.6), squeeze=False)
    for ax, (task, variants) in zip(axes[0], tasks.items()):
        dense = variants.get("dense", {}).get("flops")
        labels = []
        for i, (name, v) in enumerate(variants.items()):
            m, s = mean_std(v["values"])
            uoe = name.startswith("uoe_")
            color = "tab:orange" if uoe else "tab:blue"
            open_marker = task == "text" and v["causal"] == "no"
            ax.errorbar(i + 0.12, m, yerr=s, fmt="D", color=color, markersize=7, capsize=5,
                        markerfacecolor="white" if open_marker else color)
            ax.scatter([i - 0.12] * len(v["values"]), v["values"], color=color, s=14, alpha=0.6, zorder=3)
            star = "*" if task == "text" and v["causal"] == "no" else ""
            ratio = f"\n{v['flops'] / dense:.3f}x" if dense else ""
            labels.append(f"{name}{star}{ratio}")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
        values = [x for v in variants.values() for x in v["values"]]
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.6 + 1e-3
        ax.set_ylim(lo - pad, hi + pad)
        if task == "text":
            ax.set_title("tiny Shakespeare: validation bits/char (lower is better)")
            ax.set_ylabel("bits per character")
        else:
            ax.set_title("Fashion-MNIST 4x4 patches: test accuracy (higher is better)")
            ax.set_ylabel("accuracy")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("UoE vs dense and MoE at matched forward FLOPs per token\n"
                 "(FLOPs ratio to dense under each name; * not causal; dots: seeds, diamond: mean ± std)", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"plot_uoe.py: wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

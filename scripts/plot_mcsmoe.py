#!/usr/bin/env python3
"""Draws what build/bin/mcsmoe writes (--csv): the score against the
checkpoint's size on disk (relative to the full MoE), one row of panels per
CSV file and one panel per expert kind. Each (stage, G) is a point at the
mean over seeds with error bars of one sample standard deviation; the label
says G. The full MoE's mean score is a dashed line. Fashion-MNIST panels show
test accuracy (higher is better), text panels validation loss (lower is
better). A file may carry a title after a colon: runs.csv:"top-2".

    python3 scripts/plot_mcsmoe.py docs/results/mcsmoe/fashion_runs.csv:top-1 \\
        docs/results/mcsmoe/fashion_k2_runs.csv:top-2 docs/results/mcsmoe/text_runs.csv:top-1 \\
        -o docs/img/mcsmoe_results.png

Needs python3-matplotlib; exits 77 (skipped) without it.
"""
import argparse
import csv
import os
import statistics
import sys
from collections import OrderedDict

DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "img", "mcsmoe_results.png")

STYLE = {  # stage -> (marker, colour)
    "full": ("s", "black"),
    "aligned": ("D", "grey"),
    "merged": ("o", "tab:blue"),
    "uniform": ("v", "tab:purple"),
    "random": ("x", "tab:red"),
    "recovered": ("o", "tab:green"),
    "compressed": ("*", "tab:orange"),
    "unaligned": ("^", "tab:brown"),
    "scratch": ("P", "tab:olive"),
}


def read_runs(path):
    """(task, {kind: OrderedDict{(stage, groups): {"score": [...], "bytes": [...]}}})"""
    kinds = OrderedDict()
    task = None
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            task = row["task"]
            key = (row["stage"], int(row["groups"]))
            cell = kinds.setdefault(row["kind"], OrderedDict()).setdefault(key, {"score": [], "bytes": []})
            score = float(row["score"])
            cell["score"].append(100 * score if task == "fashion" else score)
            cell["bytes"].append(float(row["bytes"]))
    return task, kinds


def mean_std(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", nargs="+", help="per-run CSVs of build/bin/mcsmoe --csv, each optionally FILE:TITLE")
    p.add_argument("-o", "--output", default=DEFAULT_OUTPUT, help="PNG to write (default: docs/img/mcsmoe_results.png)")
    args = p.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_mcsmoe: python3-matplotlib is not installed", file=sys.stderr)
        return 77

    runs = []
    for spec in args.csv:
        path, _, title = spec.partition(":")
        task, kinds = read_runs(path)
        runs.append((task, title, kinds))
    cols = max(len(k) for _, _, k in runs)
    fig, axes = plt.subplots(len(runs), cols, figsize=(6.2 * cols, 4.4 * len(runs)), squeeze=False)
    for row, (task, title, kinds) in enumerate(runs):
        for ax, (kind, cells) in zip(axes[row], kinds.items()):
            full = next((c for (stage, _), c in cells.items() if stage == "full"), None)
            if full is None:
                continue
            full_bytes = statistics.mean(full["bytes"])
            ax.axhline(statistics.mean(full["score"]), color="black", linestyle="--", linewidth=0.8)
            seen = set()
            for (stage, groups), cell in cells.items():
                if stage == "aligned":
                    continue  # the same point as full
                marker, colour = STYLE.get(stage, ("o", "tab:cyan"))
                score, sd = mean_std(cell["score"])
                mem = 100 * statistics.mean(cell["bytes"]) / full_bytes
                ax.errorbar(mem, score, yerr=sd, fmt=marker, color=colour, capsize=3, markersize=7,
                            label=stage if stage not in seen else None)
                seen.add(stage)
                if stage != "full":
                    ax.annotate(f"G={groups}", (mem, score), textcoords="offset points", xytext=(5, -3), fontsize=7)
            name = "Fashion-MNIST" if task == "fashion" else "tinyshakespeare"
            ax.set_title(f"{name}, {kind} experts{', ' + title if title else ''} ({len(full['score'])} seeds)")
            ax.set_xlabel("checkpoint size, % of the full MoE")
            ax.set_ylabel("test accuracy (%)" if task == "fashion" else "validation loss (nats/char), lower is better")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right" if task == "fashion" else "upper right")
    fig.suptitle("MC-SMoE stages: score against memory (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

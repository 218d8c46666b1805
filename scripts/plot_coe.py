#!/usr/bin/env python3
"""Draws the validation curves that build/bin/coe writes (--csv): one panel
per task (below it, the same zoomed on the last third of training), one
line per variant (mean over seeds, a band of +- one sample standard
deviation), validation loss against training step; MoEs dashed.

    python3 scripts/plot_coe.py text.csv chain.csv -o docs/img/coe_curves.png

Needs python3-matplotlib (scripts/setup installs it).
"""
import argparse
import csv
import os
import statistics
import sys
from collections import defaultdict

DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "img", "coe_curves.png")


def read_curves(paths):
    """{task: {(variant, label): {step: [val_loss per seed]}}}"""
    curves = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                key = (row["variant"], row["label"])
                curves[row["task"]][key][int(row["step"])].append(float(row["val_loss"]))
    return curves


def mean_std(xs):
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", nargs="+", help="curves written by build/bin/coe --csv")
    p.add_argument("-o", "--output", default=DEFAULT_OUTPUT, help="PNG to write (default: docs/img/coe_curves.png)")
    p.add_argument("--skip-steps", type=int, default=100, help="leave out the first steps (the loss falls too fast to see)")
    p.add_argument("--zoom", type=float, default=1 / 3, help="the lower panels show this last fraction of training")
    a = p.parse_args()

    try:
        import matplotlib
    except ImportError:
        print("plot_coe.py: matplotlib is missing (apt-get install python3-matplotlib)", file=sys.stderr)
        sys.exit(77)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = read_curves(a.csv)
    if not curves:
        sys.exit("plot_coe.py: no rows in " + ", ".join(a.csv))
    tasks = sorted(curves)
    variants = sorted({v for task in tasks for (v, _) in curves[task]})
    colour = {v: plt.get_cmap("tab10")(i % 10) for i, v in enumerate(variants)}
    fig, axes = plt.subplots(2, len(tasks), figsize=(6.5 * len(tasks), 9), squeeze=False)
    for col, task in enumerate(tasks):
        last = max(s for by_step in curves[task].values() for s in by_step)
        for row, first in enumerate((a.skip_steps, int(last * (1 - a.zoom)))):
            ax = axes[row][col]
            shown = []  # the mean of every variant at every shown step
            for (variant, label), by_step in sorted(curves[task].items()):
                steps = sorted(s for s in by_step if s >= first)
                if not steps:
                    continue
                stats = [mean_std(by_step[s]) for s in steps]
                shown.append([m for m, _ in stats])
                seeds = len(by_step[steps[-1]])
                ax.plot(steps, [m for m, _ in stats], "--" if variant.startswith("moe") else "-", color=colour[variant],
                        label=f"{label} ({variant}, {seeds} seeds)")
                ax.fill_between(steps, [m - s for m, s in stats], [m + s for m, s in stats], color=colour[variant],
                                alpha=0.12, linewidth=0)
            if row and shown:  # zoomed: the spread of the bulk of the variants; a far outlier leaves the panel
                ends = sorted(m[-1] for m in shown)
                starts = sorted(m[0] for m in shown)
                top = starts[(3 * len(starts)) // 4]
                ax.set_ylim(ends[0] - 0.1 * (top - ends[0]), top + 0.05 * (top - ends[0]))
            ax.set_title(f"task: {task}" + (f", the last {int(a.zoom * 100)} % of training" if row else ""))
            ax.set_xlabel("training step")
            ax.set_ylabel("validation loss (nats" + (", answers only)" if task == "chain" else " per character)"))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.output, dpi=120)
    print(f"plot_coe.py: wrote {a.output}")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Draws the plots of the docs from the examples' and benchmarks' JSON lines
under docs/results/ into docs/img/<name>.png (100 dpi). One function per plot:

    scaling_size    Scaling-MLPs: test accuracy against parameters
                    (docs/results/scaling_mlp/runs.jsonl, full_2026-11-24.jsonl)
    scaling_curves  Scaling-MLPs: training loss and test accuracy per epoch
                    (docs/results/scaling_mlp/epochs.jsonl)
    moe_curves      the MoE baselines of moe_compare: training loss against step,
                    and test accuracy (docs/results/moe_compare/{curves,runs}.jsonl)
    moe_speed       one MoE layer's forward + backward time against tokens and
                    against experts, moekit vs PyTorch eager
                    (docs/results/moe_speed/{moekit,torch,machine}.jsonl)
    mowst_seeds     Mowst: test accuracy of every seed, each backbone alone, with
                    Mowst and with Mowst* (docs/results/mowst/backbones.jsonl)

    /usr/bin/python3 scripts/plot_results.py                 # every plot
    /usr/bin/python3 scripts/plot_results.py moe_speed -o /tmp/img

scripts/make_plot_data runs the programs that write those files. Error bars
and bands are ± one standard deviation over seeds where there are seeds; the
speed plot shows the median of the repeated runs and their range. A plot
whose files are missing is skipped with a message. Needs Debian's
python3-matplotlib; exits 77 (skipped) without it.
"""
import argparse
import json
import os
import statistics
import sys
from collections import OrderedDict, defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DPI = 100


def read_jsonl(path):
    """Every JSON object of a JSON-lines file (blank lines skipped)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def mean_std(values):
    """(mean, standard deviation) of values; the deviation is 0 for one value."""
    values = list(values)
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def save(fig, out_dir, name):
    path = os.path.join(out_dir, name + ".png")
    fig.savefig(path, dpi=DPI)
    print(f"plot_results.py: wrote {os.path.relpath(path, ROOT)}")
    return path


def model_label(arch, model):
    return {"bottleneck": model, "standard": model if model.startswith("S-") else "S-" + model}.get(arch, model)


# --- Scaling-MLPs ---------------------------------------------------------------------------

ARCH_STYLE = {"bottleneck": ("tab:blue", "o", "B-MLP"), "standard": ("tab:green", "s", "S-MLP"),
              "mixer": ("tab:purple", "^", "MLP-Mixer")}


def scaling_size(results, plt):
    """Test accuracy against parameters (log axis): the 3-seed runs on 10,000 training images
    (mean ± std) and the earlier 1-seed runs on all 60,000 (docs/scaling-mlps.md's table)."""
    runs = read_jsonl(os.path.join(results, "scaling_mlp", "runs.jsonl"))
    full_path = os.path.join(results, "scaling_mlp", "full_2026-11-24.jsonl")
    full = read_jsonl(full_path) if os.path.exists(full_path) else []
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    groups = OrderedDict()
    for r in runs:
        groups.setdefault((r["arch"], r["model"], r["params"]), []).append(100 * r["test_accuracy"])
    seeds = max(len(v) for v in groups.values())
    for arch in ARCH_STYLE:
        color, marker, name = ARCH_STYLE[arch]
        pts = sorted((p, *mean_std(acc), model) for (a, model, p), acc in groups.items() if a == arch)
        if pts:
            ax.errorbar([p for p, *_ in pts], [m for _, m, _, _ in pts], yerr=[s for _, _, s, _ in pts],
                        color=color, marker=marker, capsize=4, linestyle="-" if arch == "bottleneck" else "none",
                        label=f"{name}, 10,000 training images, mean ± std of {seeds} seeds")
            for p, m, s, model in pts:
                ax.annotate(model_label(arch, model), (p, m), textcoords="offset points", xytext=(6, -12), fontsize=8,
                            color=color)
        fpts = sorted((r["params"], 100 * r["test_accuracy"], r["model"]) for r in full if r["arch"] == arch)
        if fpts:
            ax.plot([p for p, _, _ in fpts], [a for _, a, _ in fpts], color=color, marker=marker,
                    markerfacecolor="white", linestyle="--" if arch == "bottleneck" else "none",
                    label=f"{name}, all 60,000 images, 1 seed (2026-11-24)")
            for p, a, model in fpts:
                ax.annotate(model_label(arch, model), (p, a), textcoords="offset points", xytext=(6, 4), fontsize=8,
                            color=color)
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi * 2.5)  # room for the labels right of the largest model
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("test accuracy after 5 epochs, %")
    ax.set_title("Scaling-MLPs on Fashion-MNIST: accuracy against model size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def scaling_curves(results, plt):
    """Training loss and test accuracy per epoch, mean ± std over seeds (bands), per model."""
    rows = read_jsonl(os.path.join(results, "scaling_mlp", "epochs.jsonl"))
    by_model = OrderedDict()
    for r in rows:
        by_model.setdefault((r["arch"], r["model"]), defaultdict(list))[r["epoch"]].append(r)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    seeds = 0
    for i, ((arch, model), epochs) in enumerate(by_model.items()):
        xs = sorted(epochs)
        seeds = max(seeds, max(len(epochs[e]) for e in xs))
        for ax, key, scale in ((left, "train_loss", 1), (right, "test_accuracy", 100)):
            ms = [mean_std(scale * r[key] for r in epochs[e]) for e in xs]
            mean = [m for m, _ in ms]
            ax.plot(xs, mean, marker="o", markersize=4, color=colors[i % len(colors)], label=model_label(arch, model))
            ax.fill_between(xs, [m - s for m, s in ms], [m + s for m, s in ms], color=colors[i % len(colors)],
                            alpha=0.2)
    left.set_ylabel("training loss (label smoothing 0.1), nats")
    right.set_ylabel("test accuracy, %")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Scaling-MLPs on 10,000 Fashion-MNIST images, 5 epochs: mean ± std of {seeds} seeds", fontsize=11)
    fig.tight_layout()
    return fig


# --- MoE baselines -------------------------------------------------------------------------

MOE_STYLE = OrderedDict([("dense", ("black", "dense FFN")), ("switch", ("tab:blue", "Switch (top-1)")),
                         ("gshard", ("tab:orange", "GShard (top-2)")),
                         ("expert_choice", ("tab:green", "expert choice")),
                         ("deepseek", ("tab:red", "DeepSeek-style (fine + shared)"))])


def moe_curves(results, plt):
    """moe_compare: training loss (mean of every 10 steps) against step, mean ± std over seeds
    (bands); test accuracy per model, every seed and mean ± std."""
    curves = read_jsonl(os.path.join(results, "moe_compare", "curves.jsonl"))
    runs = read_jsonl(os.path.join(results, "moe_compare", "runs.jsonl"))
    by_model = defaultdict(lambda: defaultdict(list))
    for c in curves:
        by_model[c["curve"]][c["step"]].append(c["train_loss"])
    accuracy = defaultdict(list)
    for r in runs:
        for row in r["rows"]:
            accuracy[row["model"]].append(100 * row["test_accuracy"])
    seeds = len(runs)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), gridspec_kw={"width_ratios": [1.8, 1]})
    for model, (color, name) in MOE_STYLE.items():
        if model not in by_model:
            continue
        steps = sorted(by_model[model])
        ms = [mean_std(by_model[model][s]) for s in steps]
        left.plot(steps, [m for m, _ in ms], color=color, label=name, linewidth=1.3)
        left.fill_between(steps, [m - s for m, s in ms], [m + s for m, s in ms], color=color, alpha=0.2)
    first = runs[0]
    per_epoch = -(-first["train_images"] // first["batch"])
    for e in range(1, first["epochs"]):
        left.axvline(e * per_epoch, color="grey", linewidth=0.8, linestyle=":")
    tail = [m for c in by_model.values() for s in c for m in c[s]]
    left.set_ylim(min(tail) - 0.03, 1.3)  # the first steps (loss ~2.3) are cut off
    left.set_xlabel(f"optimizer step (batch {first['batch']}; {first['train_images']:,} images, "
                    f"{per_epoch} steps per epoch: dotted lines)")
    left.set_ylabel("training loss, mean of 10 steps, nats")
    left.set_title(f"training loss: {first['model']}, {first['experts']} experts, {first['epochs']} epochs "
                   f"(axis cut at 1.3)", fontsize=10)
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    models = [m for m in MOE_STYLE if m in accuracy]
    for i, m in enumerate(models):
        color = MOE_STYLE[m][0]
        mean, std = mean_std(accuracy[m])
        right.scatter([i - 0.08] * len(accuracy[m]), accuracy[m], color=color, s=16, alpha=0.6, zorder=3)
        right.errorbar(i + 0.08, mean, yerr=std, color=color, marker="D", markersize=6, markeredgecolor="black",
                       capsize=4, zorder=4)
    lo = min(min(v) for v in accuracy.values())
    hi = max(max(v) for v in accuracy.values())
    right.set_ylim(lo - 0.4, hi + 0.4)
    right.set_xlim(-0.6, len(models) - 0.4)
    right.set_xticks(range(len(models)))
    right.set_xticklabels([m.replace("expert_choice", "expert\nchoice") for m in models], fontsize=9)
    right.set_ylabel("test accuracy, %")
    right.set_title(f"test accuracy: {seeds} seeds (dots), mean ± std", fontsize=10)
    right.grid(True, axis="y", alpha=0.3)
    fig.suptitle("MoE baselines at matched active expert weights, moe_compare on Fashion-MNIST", fontsize=11)
    fig.tight_layout()
    return fig


# --- MoE layer speed -----------------------------------------------------------------------

def moe_speed(results, plt):
    """Forward + backward time of one MoE layer (median of each run; the line joins the median of
    the repeated runs, the bars span their range) against tokens and against experts; below, the
    speed-up of moekit over PyTorch."""
    d = os.path.join(results, "moe_speed")
    sides = OrderedDict([("moekit", ("tab:blue", "o", "moekit (bench_moe_layer)")),
                         ("torch", ("tab:red", "s", "PyTorch eager, per-expert loop (moe_torch.py)"))])
    times = {}
    for side in sides:
        t = defaultdict(list)
        for r in read_jsonl(os.path.join(d, side + ".jsonl")):
            if r["bench"] == "moe_layer" and r["pass"] == "fwd+bwd":
                t[(r["tokens"], r["experts"])].append(r["median_ms"])
        times[side] = t
    machine_path = os.path.join(d, "machine.json")
    machine = read_jsonl(machine_path)[0] if os.path.exists(machine_path) else {}
    repeats = min(len(v) for t in times.values() for v in t.values())
    tok_points = sorted({k for k in times["moekit"] if k[1] == 8})
    exp_points = sorted({k for k in times["moekit"] if k[0] == 512}, key=lambda k: k[1])
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex="col", gridspec_kw={"height_ratios": [2.2, 1]})
    for col, (points, index, xlabel) in enumerate(((tok_points, 0, "tokens per batch T (8 experts)"),
                                                   (exp_points, 1, "experts E (512 tokens)"))):
        top, bottom = axes[0][col], axes[1][col]
        xs = [p[index] for p in points]
        for side, (color, marker, name) in sides.items():
            med = [statistics.median(times[side][p]) for p in points]
            low = [m - min(times[side][p]) for m, p in zip(med, points)]
            high = [max(times[side][p]) - m for m, p in zip(med, points)]
            top.errorbar(xs, med, yerr=[low, high], color=color, marker=marker, capsize=3, label=name)
        ratio = [statistics.median(times["torch"][p]) / statistics.median(times["moekit"][p]) for p in points]
        bottom.plot(xs, ratio, color="black", marker="o")
        bottom.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        for x, r in zip(xs, ratio):
            bottom.annotate(f"{r:.2f}×", (x, r), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        top.set_xscale("log", base=2)
        bottom.set_xscale("log", base=2)
        if col == 0:
            top.set_yscale("log", base=2)
            top.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        top.set_ylabel("forward + backward, ms" + (" (log scale)" if col == 0 else ""))
        bottom.set_ylabel("speed-up over PyTorch")
        bottom.set_xlabel(xlabel)
        bottom.set_xticks(xs)
        bottom.set_xticklabels([str(x) for x in xs])
        lo, hi = min(ratio), max(ratio)
        bottom.set_ylim(min(0.9, lo - 0.1), hi + 0.25)
        for ax in (top, bottom):
            ax.grid(True, which="both", alpha=0.3)
        top.legend(fontsize=8, loc="upper left")
    kernel = machine.get("openblas_core", "?")
    cpu = machine.get("cpu", "CPU ?").replace("(R)", "").split(" / ")
    if len(cpu) == 3:  # lscpu's model name / family / model
        cpu = [f"{cpu[0]} (family {cpu[1]} model {cpu[2]})"]
    loads = [float(r["loadavg"].split()[0]) for r in read_jsonl(os.path.join(d, "moekit.jsonl")) if "loadavg" in r]
    fig.suptitle("One MoE layer (d_model 256, d_ff 512, top-2, GELU experts, fp32), 1 thread, thread CPU time\n"
                 f"median of {repeats} alternating runs (bars: their range); {cpu[0]}, OpenBLAS {kernel} kernel;\n"
                 f"{'no other jobs' if max(loads) < 1.5 else 'machine shared with other jobs'} "
                 f"(load average {min(loads):.1f}–{max(loads):.1f} on {machine.get('cpus', '?')} CPUs)", fontsize=10)
    fig.tight_layout()
    return fig


# --- Mowst ----------------------------------------------------------------------------------

def mowst_seeds(results, plt):
    """Per-seed test accuracy on Cora and CiteSeer: each backbone alone, Mowst and Mowst*
    with it (dots: seeds; diamond and bar: mean ± std)."""
    rows = [r["result"] for r in read_jsonl(os.path.join(results, "mowst", "backbones.jsonl"))]
    variants = OrderedDict([("alone", ("tab:grey", "backbone alone")), ("mowst", ("tab:orange", "Mowst")),
                            ("mowst-star", ("tab:red", "Mowst*"))])
    datasets = list(OrderedDict.fromkeys(r["dataset"] for r in rows))
    backbones = list(OrderedDict.fromkeys(r["strong"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.4))
    axes = axes if len(datasets) > 1 else [axes]
    seeds = max(len(r["test_acc"]) for r in rows)
    for ax, ds in zip(axes, datasets):
        for b, backbone in enumerate(backbones):
            for v, (variant, (color, name)) in enumerate(variants.items()):
                model = backbone if variant == "alone" else variant
                hits = [r for r in rows if r["dataset"] == ds and r["strong"] == backbone and r["model"] == model]
                if not hits:
                    continue
                acc = [100 * a for a in hits[0]["test_acc"]]
                x = b + (v - 1) * 0.26
                m, s = mean_std(acc)
                jitter = [x - 0.04 + 0.08 * (i % 5) / 4 for i in range(len(acc))]
                ax.scatter(jitter, acc, color=color, s=10, alpha=0.6, zorder=3, label=name if b == 0 else None)
                ax.errorbar(x + 0.09, m, yerr=s, color=color, marker="D", markersize=5, markeredgecolor="black",
                            capsize=3, linewidth=1.2, zorder=4)
        all_acc = [100 * a for r in rows if r["dataset"] == ds for a in r["test_acc"]]
        ax.set_ylim(min(all_acc) - 2, max(all_acc) + 2)
        ax.set_xticks(range(len(backbones)))
        ax.set_xticklabels([b.upper() if b != "sage" else "SAGE" for b in backbones])
        ax.set_xlabel("GNN backbone (the strong expert)")
        ax.set_ylabel("test accuracy, %")
        ax.set_title({"cora": "Cora", "citeseer": "CiteSeer"}.get(ds, ds))
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(f"Mowst on citation graphs: every one of {seeds} seeds (dots), mean ± std (diamonds)", fontsize=11)
    fig.tight_layout()
    return fig


PLOTS = OrderedDict([("scaling_size", ("scaling_mlp_size", scaling_size)),
                     ("scaling_curves", ("scaling_mlp_curves", scaling_curves)),
                     ("moe_curves", ("moe_baselines_curves", moe_curves)),
                     ("moe_speed", ("moe_layer_speed", moe_speed)),
                     ("mowst_seeds", ("mowst_seeds", mowst_seeds))])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plots", nargs="*", metavar="PLOT", help="which plots (default: all): " + ", ".join(PLOTS))
    p.add_argument("--results", default=os.path.join(ROOT, "docs", "results"), help="folder of the result files")
    p.add_argument("-o", "--output", default=os.path.join(ROOT, "docs", "img"), help="folder for the PNGs")
    args = p.parse_args()
    unknown = [k for k in args.plots if k not in PLOTS]
    if unknown:
        p.error("unknown plot " + ", ".join(unknown) + " (one of " + ", ".join(PLOTS) + ")")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_results.py: matplotlib is not installed (apt-get install python3-matplotlib); skipped",
              file=sys.stderr)
        return 77
    os.makedirs(args.output, exist_ok=True)
    status = 0
    for key in args.plots or list(PLOTS):
        name, draw = PLOTS[key]
        try:
            fig = draw(args.results, plt)
        except FileNotFoundError as e:
            print(f"plot_results.py: {key}: {e.filename} is missing; skipped (scripts/make_plot_data makes it)",
                  file=sys.stderr)
            status = status or 1
            continue
        save(fig, args.output, name)
        plt.close(fig)
    return status


if __name__ == "__main__":
    sys.exit(main())

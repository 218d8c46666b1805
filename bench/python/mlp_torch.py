#!/usr/bin/python3
"""PyTorch eager reference for bench/bench_mlp.cpp: one training step of a
Scaling-MLPs bottleneck MLP (default B_6-Wi_512, 784 inputs, 10 classes,
batch 256, AdamW with torch's defaults, cross entropy), median of timed steps
after warm-ups, interleaved with the same ceiling (the step's GEMMs alone, as
torch.mm calls). Prints one JSON line with the same fields as bench_mlp.

    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 /usr/bin/python3 bench/python/mlp_torch.py --threads 2
    python3 bench/python/mlp_torch.py --device cuda      # bench_mlp --backend cuda's baseline

On the GPU each step and the ceiling are timed with CUDA events on the current
stream, TF32 is off, and the JSON names the GPU.
"""
import argparse
import json
import re
import statistics
import sys
import time

import torch
from torch import nn

from bench_common import blas_kernel


class Block(nn.Module):
    """h + fc2(GELU(fc1(LayerNorm(h)))), as scaling_mlps' BottleneckBlock."""

    def __init__(self, width, expansion):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, expansion * width)
        self.fc2 = nn.Linear(expansion * width, width)
        self.act = nn.GELU()

    def forward(self, x):
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class BottleneckMLP(nn.Module):
    def __init__(self, dim_in, width, blocks, classes, expansion=4):
        super().__init__()
        self.stem = nn.Linear(dim_in, width)
        self.blocks = nn.Sequential(*[Block(width, expansion) for _ in range(blocks)])
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def layers(dim_in, width, blocks, classes, expansion):
    h = expansion * width
    return [(dim_in, width)] + [(width, h), (h, width)] * blocks + [(width, classes)]


def summarize(ms):
    s = sorted(ms)
    at = lambda q: s[int(q * (len(s) - 1) + 0.5)]
    return at(0.5), at(0.1), at(0.9)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="B_6-Wi_512")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    a = ap.parse_args()
    m = re.fullmatch(r"B_(\d+)-Wi_(\d+)(?:-Exp_(\d+))?", a.model)
    if not m:
        sys.exit(f"--model: '{a.model}' is not of the form B_<blocks>-Wi_<width>")
    blocks, width, expansion = int(m[1]), int(m[2]), int(m[3] or 4)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    n = a.batch
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 GEMMs stay fp32, as in bench_mlp

    model = BottleneckMLP(784, width, blocks, 10, expansion).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(n, 784, device=dev)
    y = torch.randint(0, 10, (n,), device=dev)

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    shapes = layers(784, width, blocks, 10, expansion)
    widest = max(max(s) for s in shapes)
    xs = torch.rand(n, widest, device=dev)
    dys = torch.rand(n, widest, device=dev)
    ws = {s: torch.rand(s, device=dev) for s in set(shapes)}

    def ceiling():
        for i, (fi, fo) in enumerate(shapes):
            xi, dy, w = xs[:, :fi], dys[:, :fo], ws[(fi, fo)]
            torch.mm(xi, w)
            if i:
                torch.mm(dy, w.t())
            torch.mm(xi.t(), dy)

    flops = sum((2 if i == 0 else 3) * 2.0 * n * fi * fo for i, (fi, fo) in enumerate(shapes))
    runs = [step, ceiling]
    for _ in range(a.warmup):
        for r in runs:
            r()
    times = [[], []]
    if dev.type == "cuda":
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(a.reps):
        for i, r in enumerate(runs):
            if dev.type == "cuda":
                start.record()
                r()
                stop.record()
                stop.synchronize()
                times[i].append(start.elapsed_time(stop))
            else:
                t0 = time.perf_counter()
                r()
                times[i].append((time.perf_counter() - t0) * 1e3)
    med, p10, p90 = summarize(times[0])
    cmed = summarize(times[1])[0]
    params = sum(p.numel() for p in model.parameters())
    out = {"bench": "mlp_train_step", "impl": "torch", "torch": torch.__version__, "config": a.model,
           "backend": dev.type, "threads": a.threads, "batch": n, "params": params, "median_ms": round(med, 4),
           "p10_ms": round(p10, 4), "p90_ms": round(p90, 4), "images_per_s": round(n / (med * 1e-3), 2),
           "gflops": round(flops / (med * 1e6), 3), "ceiling": "step GEMMs as torch.mm",
           "ceiling_median_ms": round(cmed, 4), "ceiling_gflops": round(flops / (cmed * 1e6), 3),
           "fraction_of_ceiling": round(cmed / med, 4), "blas_kernel": blas_kernel()}
    if dev.type == "cuda":
        out.update(gpu=torch.cuda.get_device_name(dev), tf32="off", ceiling="step GEMMs as torch.mm (TF32 off)")
    print(json.dumps(out))
    print(f"torch {a.model} batch {n}, {a.threads} thread(s): step {med:.2f} ms (p10 {p10:.2f}, p90 {p90:.2f}) = "
          f"{n / (med * 1e-3):.0f} images/s | GEMMs alone {cmed:.2f} ms", file=sys.stderr)


if __name__ == "__main__":
    main()

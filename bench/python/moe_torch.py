#!/usr/bin/python3
"""PyTorch eager MoE baseline for bench_moe_layer (performance-anchors.md section 6,
"list" variant: separate per-expert weight tensors, a per-expert loop).

    bench_moe_layer --config C-S --dump DIR
    moe_torch.py DIR/C-S.safetensors --threads 1

Loads the inputs, weights, output and gradients moekit wrote, checks that
PyTorch's output and every gradient match them (rtol 1e-4; exits 1 if not),
then times forward and forward+backward (the output's gradient seeded with G:
out.backward(G)) with the same
protocol as bench_moe_layer (interleaved, warm-ups, median and spread) and
prints the same JSON fields on stdout, a table on stderr.
"""
import argparse
import json
import os
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dump", help="<config>.safetensors written by bench_moe_layer --dump")
    p.add_argument("--threads", type=int, default=1, help="torch threads (OMP_NUM_THREADS)")
    p.add_argument("--blas-threads", type=int, default=None,
                   help="OPENBLAS_NUM_THREADS (default: --threads)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall (perf_counter) or cpu (this thread's CPU time, for loaded machines; 1 thread)")
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--atol", type=float, default=1e-5,
                   help="absolute tolerance, relative to the largest |value| of each tensor")
    return p.parse_args()


# Threads must be pinned before torch (and with it OpenBLAS) is loaded.
ARGS = parse_args()
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.blas_threads or ARGS.threads)
# OPENBLAS_CORETYPE is kept: bench_moe_layer inherits it too, and both sides must run the
# same kernel (PERFORMANCE.md: on CPUs OpenBLAS 0.3.21 does not know, SkylakeX, not Prescott).

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench_common import blas_kernel, compare, interleaved, read_safetensors  # noqa: E402


def blas_library():
    """Where libblas.so.3 resolves (PERFORMANCE.md: must be OpenBLAS, not the reference BLAS)."""
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"):
        path = os.path.join(d, "libblas.so.3")
        if os.path.exists(path):
            return os.path.realpath(path)
    return "not found"


class eager_moe:
    """performance-anchors.md section 6, "list" variant. Weights are (in, out) as moekit stores them."""

    def __init__(self, router, w1, w2, k):
        self.k = k
        self.wg = router.clone().requires_grad_()
        self.w1 = [w.clone().requires_grad_() for w in w1.unbind(0)]
        self.w2 = [w.clone().requires_grad_() for w in w2.unbind(0)]

    def params(self):
        return [self.wg, *self.w1, *self.w2]

    def __call__(self, x):
        logits = x.mm(self.wg)
        p = torch.softmax(logits, dim=-1)
        w, idx = torch.topk(p, self.k, dim=-1)
        w = w / w.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        for e in range(len(self.w1)):
            m = (idx == e).nonzero()
            tok, slot = m[:, 0], m[:, 1]
            h = F.gelu(x.index_select(0, tok).mm(self.w1[e]))
            y = h.mm(self.w2[e])
            out = out.index_add(0, tok, y * w[tok, slot].unsqueeze(1))
        return out


def main():
    torch.set_num_threads(ARGS.threads)
    meta, t = read_safetensors(ARGS.dump)
    config = meta.get("config", os.path.basename(ARGS.dump))
    tokens, d, ff, experts, k = (int(meta[n]) for n in ("tokens", "d_model", "d_ff", "experts", "k"))
    moe = eager_moe(t["router.weight"], t["experts.w1"], t["experts.w2"], k)
    G = t["G"]
    print(f"moe_torch {config}: torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, libblas.so.3 -> {blas_library()}, "
          f"kernel {blas_kernel()} (OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')})",
          file=sys.stderr)
    if "openblas" not in blas_library():
        print("moe_torch: libblas.so.3 is not OpenBLAS; the baseline would be meaningless", file=sys.stderr)
        return 1

    # Numerics first: output and every gradient against moekit's.
    x = t["x"].clone().requires_grad_()
    out = moe(x)
    out.backward(G)
    ok = compare("out", out, t["out"], ARGS.rtol, ARGS.atol)
    ok &= compare("grad.x", x.grad, t["grad.x"], ARGS.rtol, ARGS.atol)
    ok &= compare("grad.router.weight", moe.wg.grad, t["grad.router.weight"], ARGS.rtol, ARGS.atol)
    ok &= compare("grad.experts.w1", torch.stack([w.grad for w in moe.w1]), t["grad.experts.w1"], ARGS.rtol, ARGS.atol)
    ok &= compare("grad.experts.w2", torch.stack([w.grad for w in moe.w2]), t["grad.experts.w2"], ARGS.rtol, ARGS.atol)
    if not ok:
        print(f"moe_torch {config}: outputs or gradients differ from moekit's; not timing", file=sys.stderr)
        return 1

    x = t["x"].clone().requires_grad_()
    rows = tokens * k
    a1, b1 = torch.randn(rows, d), torch.randn(d, ff)
    a2, b2 = torch.randn(rows, ff), torch.randn(ff, d)

    def forward():
        moe(x)

    def forward_backward():
        moe(x).backward(G)

    def sgemm():  # the ceiling: plain mm of the same total size, both expert matrices
        a1.mm(b1)
        a2.mm(b2)

    s = interleaved([forward, forward_backward, sgemm], ARGS.warmup, ARGS.reps, ARGS.clock)
    flop = 2.0 * rows * d * ff * 2
    ceiling_gflops = flop / (s[2]["median_ms"] * 1e6)
    ceiling = f"torch.mm {rows}x{d}x{ff}"
    for name, st, f in (("fwd", s[0], flop), ("fwd+bwd", s[1], 3 * flop)):
        line = {"bench": "moe_layer", "config": config, "backend": "torch-eager-list", "dtype": "f32",
                "threads": ARGS.threads, "clock": ARGS.clock, "pass": name, **st, "gflops": f / (st["median_ms"] * 1e6),
                "ceiling": ceiling, "ceiling_gflops": ceiling_gflops, "tokens_per_expert": rows / experts,
                "torch": torch.__version__, "blas_kernel": blas_kernel()}
        print(json.dumps(line), flush=True)
        print(f"{config:4s} torch {name:8s} {st['median_ms']:9.3f} ms [{st['p10_ms']:8.3f}, {st['p90_ms']:8.3f}] "
              f"{f / (st['median_ms'] * 1e6):6.1f} GFLOP/s (mm ceiling {ceiling_gflops:.1f})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

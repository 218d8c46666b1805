#!/usr/bin/python3
"""PyTorch reference for bench/bench_spmm.cpp, on the identical inputs that
bench_spmm --dump DIR writes (CSR arrays of the GCN-normalised adjacency, X,
the seed gradient dY, and moekit's Y and dX; Cora's features and split):

  1. SpMM forward + backward: Y = torch.sparse.mm(A, X), X (n, 64) requiring
     grad, Y.backward(dY); A as a coalesced COO tensor (and as a CSR tensor
     where torch supports its backward). The script first checks that torch's
     Y and dX match moekit's, then times fwd+bwd and fwd alone, interleaved;
  2. one training epoch of the same 2-layer GCN (hidden 64, dropout 0.5,
     AdamW lr 0.01 wd 5e-4, cross entropy on the 140 training nodes), with
     H' = torch.sparse.mm(A, H W) + b per layer.

JSON lines with the fields of bench_spmm on stdout, a table on stderr.

    build/bin/bench_spmm --threads 1 --dump /tmp/spmm_dump
    OMP_NUM_THREADS=1 /usr/bin/python3 bench/python/spmm_torch.py --dump /tmp/spmm_dump --threads 1
"""
import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from bench_common import blas_kernel


def summarize(ms):
    s = sorted(ms)
    at = lambda q: s[int(q * (len(s) - 1) + 0.5)]
    return at(0.5), at(0.1), at(0.9)


def interleaved(runs, warmup, reps):
    for _ in range(warmup):
        for r in runs:
            r()
    times = [[] for _ in runs]
    for _ in range(reps):
        for i, r in enumerate(runs):
            t0 = time.perf_counter()
            r()
            times[i].append((time.perf_counter() - t0) * 1e3)
    return [summarize(t) for t in times]


def load(d, name, suffix, dtype, shape=None):
    a = np.fromfile(os.path.join(d, f"{name}.{suffix}"), dtype=dtype)
    return torch.from_numpy(a.reshape(shape) if shape else a)


def load_graph(d, name):
    meta = json.load(open(os.path.join(d, f"{name}.meta.json")))
    n, nnz, f = meta["nodes"], meta["nnz"], meta["features"]
    crow = load(d, name, "row_ptr.i32", np.int32).long()
    col = load(d, name, "col.i32", np.int32).long()
    val = load(d, name, "val.f32", np.float32)
    assert crow.numel() == n + 1 and col.numel() == nnz and val.numel() == nnz
    rows = torch.repeat_interleave(torch.arange(n), crow[1:] - crow[:-1])
    coo = torch.sparse_coo_tensor(torch.stack([rows, col]), val, (n, n)).coalesce()
    csr = torch.sparse_csr_tensor(crow, col, val, (n, n))
    return n, nnz, f, coo, csr


def max_rel_error(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def bench_spmm(a, d, name):
    n, nnz, f, coo, csr = load_graph(d, name)
    x0 = load(d, name, "x.f32", np.float32, (n, f))
    dy = load(d, name, "dy.f32", np.float32, (n, f))
    y_ref = load(d, name, "y.f32", np.float32, (n, f))
    dx_ref = load(d, name, "dx.f32", np.float32, (n, f))

    x = x0.clone().requires_grad_()  # one leaf, reused: no copy inside the timed region (moekit copies none either)

    def fwd_bwd(A):
        x.grad = None
        y = torch.sparse.mm(A, x)
        y.backward(dy)
        return y, x.grad

    def fwd(A):
        with torch.no_grad():
            return torch.sparse.mm(A, x0)

    layouts = {"coo": coo}
    try:
        fwd_bwd(csr)
        layouts["csr"] = csr
    except (RuntimeError, NotImplementedError) as e:
        print(f"spmm_torch: sparse CSR backward unsupported in torch {torch.__version__}: {str(e).splitlines()[0]}",
              file=sys.stderr)
    for layout, A in layouts.items():
        y, dx = fwd_bwd(A)
        ey, edx = max_rel_error(y, y_ref), max_rel_error(dx, dx_ref)
        if ey > 1e-5 or edx > 1e-5:
            sys.exit(f"spmm_torch: {name}/{layout}: results differ from moekit's (Y {ey:.2e}, dX {edx:.2e})")
        s_fb, s_f = interleaved([lambda: fwd_bwd(A), lambda: fwd(A)], a.warmup, a.reps)
        flop = 2.0 * 2.0 * nnz * f
        print(json.dumps({
            "bench": "spmm_fwd_bwd", "config": f"{name} n={n} nnz={nnz} f={f}", "backend": f"torch-{layout}",
            "dtype": "f32", "threads": a.threads, "median_ms": s_fb[0], "p10_ms": s_fb[1], "p90_ms": s_fb[2],
            "gflops": flop / (s_fb[0] * 1e6), "forward_median_ms": s_f[0],
            "max_rel_error_y": ey, "max_rel_error_dx": edx, "torch": torch.__version__,
            "blas_kernel": blas_kernel()}), flush=True)
        print(f"torch.sparse.mm {layout} fwd+bwd {name:<6} n={n:<7} nnz={nnz:<8} f={f}  {s_fb[0]:8.3f} ms "
              f"(p10 {s_fb[1]:.3f}, p90 {s_fb[2]:.3f}) | fwd {s_f[0]:8.3f} ms | matches moekit "
              f"(Y {ey:.1e}, dX {edx:.1e})", file=sys.stderr)


class GCN(torch.nn.Module):
    def __init__(self, A, f_in, hidden, classes, dropout):
        super().__init__()
        self.A = A
        self.lin1 = torch.nn.Linear(f_in, hidden, bias=False)
        self.lin2 = torch.nn.Linear(hidden, classes, bias=False)
        self.b1 = torch.nn.Parameter(torch.zeros(hidden))
        self.b2 = torch.nn.Parameter(torch.zeros(classes))
        torch.nn.init.xavier_uniform_(self.lin1.weight)
        torch.nn.init.xavier_uniform_(self.lin2.weight)
        self.dropout = dropout

    def forward(self, x):
        h = torch.sparse.mm(self.A, self.lin1(x)) + self.b1
        h = F.dropout(F.relu(h), self.dropout, self.training)
        return torch.sparse.mm(self.A, self.lin2(h)) + self.b2


def bench_gcn(a, d):
    meta = json.load(open(os.path.join(d, "cora.dataset.json")))
    n, f, c = meta["nodes"], meta["features"], meta["classes"]
    _, _, _, coo, _ = load_graph(d, "cora")
    x = load(d, "cora", "features.f32", np.float32, (n, f))
    labels = load(d, "cora", "labels.i32", np.int32).long()
    train = load(d, "cora", "train.i32", np.int32).long()
    model = GCN(coo, f, 64, c, 0.5)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=5e-4)
    y_train = labels[train]
    last = [0.0]

    def epoch():
        opt.zero_grad()
        loss = F.cross_entropy(model(x)[train], y_train)
        loss.backward()
        opt.step()
        last[0] = float(loss)

    (s,) = interleaved([epoch], a.warmup, a.reps)
    print(json.dumps({
        "bench": "gcn_epoch", "config": "cora 2 layers hidden 64 dropout 0.5 adamw", "backend": "torch-coo",
        "dtype": "f32", "threads": a.threads, "median_ms": s[0], "p10_ms": s[1], "p90_ms": s[2],
        "loss_after": last[0], "torch": torch.__version__, "blas_kernel": blas_kernel()}), flush=True)
    print(f"torch gcn epoch cora (2 x 64)     {s[0]:8.3f} ms (p10 {s[1]:.3f}, p90 {s[2]:.3f}), loss {last[0]:.4f}",
          file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump", required=True, help="the folder bench_spmm --dump wrote")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=15)
    a = ap.parse_args()
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"spmm_torch: torch {torch.__version__}, OpenBLAS kernel {blas_kernel()}, {a.threads} thread(s), "
          f"{a.warmup} warm-up, {a.reps} timed repetitions",
          file=sys.stderr)
    have_cora = os.path.exists(os.path.join(a.dump, "cora.meta.json"))
    if have_cora:
        bench_spmm(a, a.dump, "cora")
        bench_gcn(a, a.dump)
    bench_spmm(a, a.dump, "csbm")


if __name__ == "__main__":
    main()

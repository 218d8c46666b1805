#!/usr/bin/python3
"""PyTorch baseline for bench_coe_layer: the Chain-of-Experts reference's
training path (ZihanWang314/CoE, modeling_coe.py, as uoe-coe.md 2.2 and 2.5
describe it), restated here in plain PyTorch and run on moekit's weights.

    RMSNorm once; per iteration t: an fp32 router Linear(D -> N, no bias),
    softmax, top-K without renormalisation, the sequence-level aux loss
    (alpha per router per iteration, attached by an identity autograd op),
    x.repeat_interleave(K) and a loop over experts with boolean masks,
    y[idx == e] = E_e(x[idx == e]), the gate-weighted sum over K, the shared
    expert on every iteration, the inner residual; no outer residual.

    bench_coe_layer --dump DIR --no-time
    coe_torch.py --check DIR                    # output and every gradient vs moekit's
    coe_torch.py --time DIR --threads 1,2       # checks first, then times (JSON lines)
    coe_torch.py --time DIR --moekit coe.jsonl  # + speed-up vs bench_coe_layer's lines

--check exits 1 when a tensor differs by more than rtol * |ref| + atol * max|ref|
(fp32: 1e-4, 1e-5). Timing follows bench_coe_layer: interleaved, warm-ups,
median and spread, loss = sum(out * G) (+ the aux losses), JSON lines with the
same config names on stdout, a table on stderr.
"""
import argparse
import ctypes
import glob
import json
import os
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", metavar="DIR", help="check every DIR/<config>.safetensors, then exit")
    mode.add_argument("--time", metavar="DIR", help="check, then time the configs dumped in DIR")
    p.add_argument("--configs", default=None, help="comma-separated config names (default: every dump in DIR)")
    p.add_argument("--threads", default="1,2", help="comma-separated torch.set_num_threads counts (--time)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall (perf_counter) or cpu (this thread's CPU time, for loaded machines; 1 thread)")
    p.add_argument("--moekit", default=None, help="bench_coe_layer JSON lines, for speed-ups at equal threads")
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--atol", type=float, default=1e-5,
                   help="absolute tolerance, relative to the largest |value| of each tensor")
    return p.parse_args()


# Thread pools are sized when torch (and with it OpenBLAS) loads: pin them
# first, to the largest count asked for; each timing then lowers them.
if __name__ == "__main__":
    ARGS = parse_args()
    THREADS = [int(n) for n in ARGS.threads.split(",") if n.strip()]
    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(max(THREADS))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench_common import blas_kernel, compare, interleaved, read_safetensors  # noqa: E402


# ---------------------------------------------------------------- the reference, restated

class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, h):
        dtype = h.dtype
        h = h.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), no biases: a routed or the shared expert."""

    def __init__(self, d, ff):
        super().__init__()
        self.gate_proj = nn.Linear(d, ff, bias=False)
        self.up_proj = nn.Linear(d, ff, bias=False)
        self.down_proj = nn.Linear(ff, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class AddAuxiliaryLoss(torch.autograd.Function):
    """Identity on y; its backward also gives the aux loss gradient 1."""

    @staticmethod
    def forward(ctx, y, aux):
        ctx.needs_aux = aux.requires_grad
        return y

    @staticmethod
    def backward(ctx, dy):
        return dy, (torch.ones((), dtype=torch.float32) if ctx.needs_aux else None)


class Gate(nn.Module):
    """fp32 Linear(D -> N, no bias), softmax, top-K unsorted, no renormalisation; seq aux loss."""

    def __init__(self, d, n, k, alpha):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, d))  # (N, D)
        self.n, self.k, self.alpha = n, k, alpha

    def forward(self, h):                                                # h (B, S, D)
        bsz, seq, d = h.shape
        logits = F.linear(h.reshape(-1, d).float(), self.weight.float())  # (T, N)
        scores = logits.softmax(dim=-1)                                  # (T, N)
        w, idx = torch.topk(scores, k=self.k, dim=-1, sorted=False)      # (T, K), (T, K)
        aux = None
        if self.training and self.alpha > 0:
            ce = torch.zeros(bsz, self.n).scatter_add_(1, idx.view(bsz, -1), torch.ones(bsz, seq * self.k))
            ce = ce.div_(seq * self.k / self.n)                          # (B, N) counts / (S·K/N)
            aux = (ce * scores.view(bsz, seq, -1).mean(dim=1)).sum(dim=1).mean() * self.alpha
        self.last_idx, self.last_aux = idx, aux  # for the check
        return idx, w, aux


class CoELayer(nn.Module):
    """C iterations over one pool of N SwiGLU experts (the reference's CoeMoE block)."""

    def __init__(self, d, n, ff, shared_ff, k, c, alpha):
        super().__init__()
        self.k = k
        self.norm = RMSNorm(d)
        self.gates = nn.ModuleList(Gate(d, n, k, alpha) for _ in range(c))
        self.experts = nn.ModuleList(SwiGLU(d, ff) for _ in range(n))
        self.shared = SwiGLU(d, shared_ff) if shared_ff > 0 else None

    def moe_train(self, h, idx, w):                        # h (T, D), idx and w (T, K)
        flat = idx.view(-1)                                # (T·K)
        h = h.repeat_interleave(self.k, dim=0)             # (T·K, D)
        y = torch.empty_like(h)                            # (T·K, D)
        for e, expert in enumerate(self.experts):
            y[flat == e] = expert(h[flat == e])
        return (y.view(*w.shape, -1) * w.unsqueeze(-1)).sum(dim=1)  # (T, D)

    def forward(self, a):                                  # a (B, S, D)
        x = self.norm(a)                                   # x(0): the normalised tensor
        for gate in self.gates:
            identity = x
            idx, w, aux = gate(x)
            y = self.moe_train(x.reshape(-1, x.shape[-1]), idx, w).view(*x.shape)  # (B, S, D)
            if aux is not None:
                y = AddAuxiliaryLoss.apply(y, aux)
            if self.shared is not None:
                y = y + self.shared(identity)
            x = x + y                                      # inner residual
        return x                                           # no outer residual


# ---------------------------------------------------------------- moekit's dumps

MATRICES = ("gate", "up", "down")  # moekit's w_gate, w_up (D, F) and w_down (F, D); torch's *_proj (out, in)


def load_weights(model, t):
    """moekit's weights into the reference modules (moekit stores (in, out), experts stacked)."""
    with torch.no_grad():
        model.norm.weight.copy_(t["norms.0.weight"])                        # (D)
        for i, g in enumerate(model.gates):
            g.weight.copy_(t[f"routers.{i}.weight"].t())                    # (D, N) -> (N, D)
        for m in MATRICES:
            banks = [("experts", model.experts)] + ([("shared", [model.shared])] if model.shared is not None else [])
            for bank, experts in banks:
                for e, w in zip(experts, t[f"{bank}.w_{m}"].unbind(0)):    # (D, F) or (F, D) each
                    getattr(e, m + "_proj").weight.copy_(w.t())


def moekit_grads(model):
    """{moekit parameter name: its gradient in moekit's layout}."""
    grad = lambda p: p.grad if p.grad is not None else torch.zeros_like(p)  # noqa: E731
    out = {"norms.0.weight": grad(model.norm.weight)}
    for i, g in enumerate(model.gates):
        out[f"routers.{i}.weight"] = grad(g.weight).t()
    for m in MATRICES:
        out[f"experts.w_{m}"] = torch.stack([grad(getattr(e, m + "_proj").weight).t() for e in model.experts])
        if model.shared is not None:
            out[f"shared.w_{m}"] = grad(getattr(model.shared, m + "_proj").weight).t().unsqueeze(0)
    return out


def load_layer(path):
    """The dumped configuration as a CoELayer holding moekit's weights: (metadata, dump, layer, (B, S, D))."""
    meta, t = read_safetensors(path)
    size = lambda key: int(meta[key])  # noqa: E731
    model = CoELayer(size("d_model"), size("experts"), size("d_ff"), size("shared_ff"), size("k"),
                     size("iterations"), float(meta["aux_alpha"]))
    load_weights(model, t)
    return meta, t, model, (size("tokens") // size("seq_len"), size("seq_len"), size("d_model"))


# ---------------------------------------------------------------- numerics

def check(path, rtol, atol):
    """One forward+backward of the reference on the dump; output, routing, aux and every gradient vs moekit's."""
    meta, t, model, shape = load_layer(path)
    print(f"{meta['config']}: C={meta['iterations']} K={meta['k']} ({path})", file=sys.stderr)
    x = t["x"].clone().view(shape).requires_grad_()        # (B, S, D)
    out = model(x)                                         # (B, S, D)
    (out * t["G"].view(shape)).sum().backward()
    ok = True
    for i, g in enumerate(model.gates):                    # same experts chosen (a near-tie could flip one)
        ours, theirs = g.last_idx.sort(dim=-1).values, t[f"routing.{i}.choice"].long().sort(dim=-1).values
        differ = int((ours != theirs).any(dim=-1).sum())
        print(f"  routing.{i}               {differ} of {ours.shape[0]} tokens choose other experts "
              f"{'ok' if differ == 0 else 'MISMATCH'}", file=sys.stderr)
        ok &= differ == 0
        if f"aux.{i}" in t:                                # moekit dumps the unweighted term
            ok &= compare(f"aux.{i}", g.last_aux / g.alpha, t[f"aux.{i}"], rtol, atol)
    ok &= compare("out", out, t["out"], rtol, atol)
    ok &= compare("grad.x", x.grad, t["grad.x"], rtol, atol)
    for name, g in moekit_grads(model).items():
        ok &= compare("grad." + name, g, t["grad." + name], rtol, atol)
    return ok


# ---------------------------------------------------------------- timing

def cpu_model():
    """As bench_coe_layer: 'model name (family F model M)' from /proc/cpuinfo."""
    info = {}
    for line in open("/proc/cpuinfo"):
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return f"{info.get('model name', 'unknown')} (family {info.get('cpu family', '?')} model {info.get('model', '?')})"


def set_threads(n):
    torch.set_num_threads(n)
    try:
        ctypes.CDLL("libblas.so.3").openblas_set_num_threads(n)
    except (OSError, AttributeError):
        pass


def forward_flop(meta):
    """Expert-matrix FLOPs of one forward, as bench_coe_layer: 2·T·D·3·C·(K·Fe + Fs)."""
    m = {k: int(meta[k]) for k in ("tokens", "d_model", "d_ff", "shared_ff", "k", "iterations")}
    return 2.0 * m["tokens"] * m["d_model"] * 3 * m["iterations"] * (m["k"] * m["d_ff"] + m["shared_ff"])


def moekit_times(path):
    """{(config, pass, threads, tokens): median_ms} from bench_coe_layer's JSON lines."""
    if not path:
        return {}
    lines = [json.loads(l) for l in open(path) if l.startswith("{")]
    return {(l["config"], l["pass"], int(l["threads"]), int(l["tokens"])): l["median_ms"]
            for l in lines if l.get("bench") == "coe_layer" and l.get("impl") == "moekit coe::layer"}


def time_all(layers, threads, a, theirs):
    """Every config's forward and fwd+bwd, interleaved, at `threads`; JSON lines and a table."""
    set_threads(threads)
    meta0 = layers[0][0]
    rows, d, ff = int(meta0["tokens"]) * 4, int(meta0["d_model"]), int(meta0["d_ff"])
    xa, h = torch.randn(rows, d), torch.randn(rows, ff)
    wg, wu, wd = torch.randn(d, ff), torch.randn(d, ff), torch.randn(ff, d)
    runs = []
    for meta, t, model, shape in layers:
        x, G = t["x"].clone().view(shape).requires_grad_(), t["G"].view(shape)
        runs.append(lambda model=model, x=x: model(x))
        runs.append(lambda model=model, x=x, G=G: (model(x) * G).sum().backward())
    runs.append(lambda: (xa.mm(wg), xa.mm(wu), h.mm(wd)))  # the ceiling: bench_coe_layer's sgemm shapes
    s = interleaved(runs, a.warmup, a.reps, a.clock)
    ceiling, ceiling_gflops = f"torch.mm {rows}x{d}x{ff} x3", 2.0 * rows * d * ff * 3 / (s[-1]["median_ms"] * 1e6)
    core, cpu, wait = blas_kernel(), cpu_model(), os.environ.get("OMP_WAIT_POLICY", "(unset)")
    for i, (meta, _, _, _) in enumerate(layers):
        for j, (name, f) in enumerate((("fwd", forward_flop(meta)), ("fwd+bwd", 3 * forward_flop(meta)))):
            st = s[2 * i + j]
            line = {"bench": "coe_layer", "config": meta["config"], "backend": "cpu",
                    "impl": "torch-eager-mask-loop", "dtype": "f32", "threads": threads, "clock": a.clock,
                    "pass": name, **st, "gflops": f / (st["median_ms"] * 1e6), "expert_gflop": f / 1e9,
                    "iterations": int(meta["iterations"]), "k": int(meta["k"]), "machine": os.uname().nodename,
                    "cpu": cpu, "blas_core": core, "blas_kernel": core, "omp_wait_policy": wait,
                    "ceiling": ceiling, "ceiling_gflops": ceiling_gflops, "torch": torch.__version__}
            ours = theirs.get((meta["config"], name, threads, int(meta["tokens"])))
            if ours:
                line.update({"moekit_median_ms": ours, "speedup": st["median_ms"] / ours})  # torch time / moekit's
            print(json.dumps(line), flush=True)
            print(f"{meta['config']:10s} torch {threads}T {name:8s} {st['median_ms']:9.3f} ms "
                  f"[{st['p10_ms']:8.3f}, {st['p90_ms']:8.3f}] {f / (st['median_ms'] * 1e6):6.1f} GFLOP/s"
                  + (f"  moekit {ours:8.3f} ms, speed-up {st['median_ms'] / ours:5.2f}x" if ours else ""),
                  file=sys.stderr)
    print(f"ceiling {ceiling}: {ceiling_gflops:.1f} GFLOP/s; {cpu}, OpenBLAS {core}, OMP_WAIT_POLICY {wait}",
          file=sys.stderr)


def dumps(directory, configs):
    """The dump files, in bench_coe_layer's default order (by C·K, then C)."""
    paths = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
    if configs:
        wanted = [c.strip() for c in configs.split(",") if c.strip()]
        paths = [os.path.join(directory, c + ".safetensors") for c in wanted]
    if not paths:
        sys.exit(f"coe_torch: no <config>.safetensors in {directory} (run bench_coe_layer --dump {directory})")
    key = lambda m: (int(m["iterations"]) * int(m["k"]), int(m["iterations"]))  # noqa: E731
    return sorted(paths, key=lambda p: key(read_safetensors(p)[0]))


def main():
    a = ARGS
    directory = a.check or a.time
    paths = dumps(directory, a.configs)
    print(f"coe_torch: torch {torch.__version__}, OpenBLAS {blas_kernel()}, OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}", file=sys.stderr)
    set_threads(THREADS[0])
    ok = all([check(p, a.rtol, a.atol) for p in paths])
    if not ok:
        print("coe_torch: outputs or gradients differ from moekit's" + ("; not timing" if a.time else ""),
              file=sys.stderr)
        return 1
    print(f"coe_torch: all {len(paths)} configs match (rtol {a.rtol}, atol {a.atol} x max |ref|)", file=sys.stderr)
    if a.check:
        return 0
    layers = [load_layer(p) for p in paths]
    theirs = moekit_times(a.moekit)
    for n in THREADS:
        time_all(layers, n, a, theirs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""PyTorch MoE layers on the GPU: the baselines of bench_moe_layer --backend cuda.

Configurations G-M, G-O and G-F of shared/design/PERFORMANCE.md, bf16, SwiGLU
experts (three matrices: gate, up, down), router softmax -> top-k ->
renormalise. Two implementations run on identical inputs and weights:

  torch-eager-loop   the per-expert loop (performance-anchors.md section 6):
                     for each expert, nonzero() its tokens, index_select, SwiGLU,
                     index_add the gate-weighted result
  torch-grouped-mm   tokens sorted by expert, the three expert matrices as
                     torch._grouped_mm calls over the expert offsets, one
                     gate-weighted index_add back (torch >= 2.8 on sm_90)

Protocol (PERFORMANCE.md): outputs and every gradient of the two agree first
(bf16 tolerances), then forward and forward+backward (the output's gradient
seeded with G: out.backward(G)) are
timed interleaved with CUDA events on one stream, >= 3 warm-ups, median and
spread of the timed repetitions, next to a dense cuBLAS bf16 GEMM of the same
total size and the device-to-device copy bandwidth, measured in the same
process. TF32 is off (nothing here is fp32 GEMM, but the setting is recorded).
One JSON object per line on stdout with bench_moe_layer's field names; a table
on stderr.

    moe_torch_cuda.py --config G-O
    moe_torch_cuda.py --config G-O --skew zipf
    moe_torch_cuda.py --all --skew none,zipf
    moe_torch_cuda.py --self-test      # CPU: config table, Zipf bias, dispatch logic

--skew zipf makes expert popularity follow Zipf(1.2): the router logits get a
fixed bias log p_e with p_e = (e + 1)^-1.2 / sum_j (j + 1)^-1.2 (expert 0 the
most popular), added before the softmax, so the gates carry it too.
"""
import argparse
import json
import math
import sys

import torch
import torch.nn.functional as F

# PERFORMANCE.md, "Configurations" (the GPU rows): tokens, d_model, d_ff, experts, top-k.
CONFIGS = {
    "G-M": dict(tokens=8192, d_model=4096, d_ff=14336, experts=8, k=2),
    "G-O": dict(tokens=16384, d_model=2048, d_ff=1024, experts=64, k=8),
    "G-F": dict(tokens=16384, d_model=2048, d_ff=768, experts=128, k=8),
}
EXPERT_MATRICES = 3  # SwiGLU: gate, up, down
ZIPF_EXPONENT = 1.2


def forward_flop(c):
    """Expert-matrix FLOPs of one forward: 2·T·k·d·ff per matrix (fwd+bwd = 3x)."""
    return 2.0 * c["tokens"] * c["k"] * c["d_model"] * c["d_ff"] * EXPERT_MATRICES


def zipf_bias(experts, exponent=ZIPF_EXPONENT):
    """(experts) float32 log-popularity: log p_e, p_e ∝ (e + 1)^-exponent, sum p_e = 1."""
    ranks = torch.arange(1, experts + 1, dtype=torch.float64)
    p = ranks.pow(-exponent)
    return (p / p.sum()).log().float()


def router_bias(skew, experts):
    if skew == "none":
        return torch.zeros(experts)
    if skew == "zipf":
        return zipf_bias(experts)
    raise ValueError(f"--skew: '{skew}' is not none or zipf")


class moe_weights:
    """The layer's parameters, shared by both implementations. Expert matrices
    are stacked (E, out, in) like nn.Linear's weight; router (d, E)."""

    def __init__(self, c, device, dtype, seed):
        g = torch.Generator(device="cpu").manual_seed(seed)
        d, ff, e = c["d_model"], c["d_ff"], c["experts"]

        def uniform(shape, fan_in):  # nn.Linear's default init: U(±1/sqrt(fan_in))
            bound = 1.0 / math.sqrt(fan_in)
            return ((torch.rand(shape, generator=g) * 2 - 1) * bound).to(device=device, dtype=dtype)

        self.router = uniform((d, e), d).requires_grad_()
        self.gate = uniform((e, ff, d), d).requires_grad_()
        self.up = uniform((e, ff, d), d).requires_grad_()
        self.down = uniform((e, d, ff), ff).requires_grad_()

    def params(self):
        return [self.router, self.gate, self.up, self.down]

    def zero_grad(self):
        for p in self.params():
            p.grad = None


def route(x, w, bias, k):
    """softmax(x·Wr + bias) -> top-k -> renormalise. Returns (gates (T, k) in x's
    dtype, expert ids (T, k) int64). The softmax runs in float32."""
    logits = x.mm(w.router).float() + bias
    p = torch.softmax(logits, dim=-1)
    gates, idx = torch.topk(p, k, dim=-1)
    gates = gates / gates.sum(-1, keepdim=True)
    return gates.to(x.dtype), idx


def swiglu(h_gate, h_up):
    return F.silu(h_gate) * h_up


def eager_loop(x, w, bias, k):
    """The per-expert loop: one nonzero() (a host sync) and three GEMMs per expert."""
    gates, idx = route(x, w, bias, k)
    out = torch.zeros_like(x)
    for e in range(w.gate.shape[0]):
        m = (idx == e).nonzero()
        tok, slot = m[:, 0], m[:, 1]
        xe = x.index_select(0, tok)
        h = swiglu(F.linear(xe, w.gate[e]), F.linear(xe, w.up[e]))
        y = F.linear(h, w.down[e])
        out = out.index_add(0, tok, y * gates[tok, slot].unsqueeze(1))
    return out


def dispatch_plan(idx, experts, align):
    """Where each (token, slot) assignment goes in expert order, with every
    expert's group padded to a multiple of `align` rows. No host sync: the
    padded buffer has its worst-case size A + E·(align - 1).

    Returns (token (A) of each assignment in expert order, flat (A) index of
    the assignment into idx.view(-1), dest (A) its row in the padded buffer,
    offsets (E) int32 cumulative padded group ends, rows of the padded buffer).
    """
    flat = idx.reshape(-1)  # (A) expert of assignment j = token j // k, slot j % k
    k = idx.shape[1]
    sorted_experts, order = torch.sort(flat, stable=True)
    counts = torch.zeros(experts, dtype=torch.int64, device=idx.device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    starts = torch.cumsum(counts, 0) - counts
    padded = (counts + align - 1) // align * align
    padded_starts = torch.cumsum(padded, 0) - padded
    rank = torch.arange(flat.numel(), device=idx.device) - starts[sorted_experts]
    dest = padded_starts[sorted_experts] + rank
    offsets = torch.cumsum(padded, 0).to(torch.int32)
    rows = flat.numel() + experts * (align - 1)
    return order // k, order, dest, offsets, rows


def grouped(x, w, bias, k, gmm, align=1):
    """Sort by expert, three grouped GEMMs, one gate-weighted index_add back.
    `gmm(a (rows, K), b (E, K, N), offsets) -> (rows, N)` is torch._grouped_mm
    on the GPU (a loop over groups in --self-test)."""
    gates, idx = route(x, w, bias, k)
    tok, order, dest, offsets, rows = dispatch_plan(idx, w.gate.shape[0], align)
    xs = x.index_select(0, tok)  # (A, d) in expert order
    if align > 1:
        xs = x.new_zeros(rows, x.shape[1]).index_copy(0, dest, xs)  # (rows, d), zero padding
    h = swiglu(gmm(xs, w.gate.transpose(-2, -1), offsets), gmm(xs, w.up.transpose(-2, -1), offsets))
    y = gmm(h, w.down.transpose(-2, -1), offsets)  # (rows, d)
    if align > 1:
        y = y.index_select(0, dest)  # (A, d)
    g = gates.reshape(-1).index_select(0, order).unsqueeze(1)  # (A, 1)
    return torch.zeros_like(x).index_add(0, tok, y * g)


def loop_grouped_mm(a, b, offsets):
    """torch._grouped_mm's 2D x 3D semantics as a loop over groups (rows past the
    last offset stay zero): the CPU stand-in of --self-test."""
    out = a.new_zeros(a.shape[0], b.shape[2])
    begin = 0
    for e, end in enumerate(offsets.tolist()):
        if end > begin:
            out[begin:end] = a[begin:end].mm(b[e])
        begin = end
    return out


def grouped_mm_available():
    return hasattr(torch, "_grouped_mm")


# ---- checks ----------------------------------------------------------------------


def compare(name, got, want, rtol, atol_rel):
    """allclose with atol scaled by the reference's largest magnitude; prints the errors."""
    got, want = got.detach().float(), want.detach().float()
    scale = max(want.abs().max().item(), 1e-30)
    err = (got - want).abs()
    ok = bool((err <= atol_rel * scale + rtol * want.abs()).all())
    print(f"  {name:12s} max |err| {err.max().item():.3e} (max |ref| {scale:.3e}) {'ok' if ok else 'MISMATCH'}",
          file=sys.stderr)
    return ok


def outputs_and_grads(fn, x, w, G):
    w.zero_grad()
    xv = x.detach().clone().requires_grad_()
    out = fn(xv)
    out.backward(G)
    return [out.detach(), xv.grad] + [p.grad.detach().clone() for p in w.params()]


def check_same(a_fn, b_fn, x, w, G, rtol, atol_rel):
    names = ["out", "grad.x", "grad.router", "grad.gate", "grad.up", "grad.down"]
    a = outputs_and_grads(a_fn, x, w, G)
    b = outputs_and_grads(b_fn, x, w, G)
    w.zero_grad()
    return all([compare(n, got, want, rtol, atol_rel) for n, got, want in zip(names, b, a)])


def self_test():
    """What can be checked without a GPU: the table, the bias, the dispatch."""
    ok = True
    want = {"G-M": (8192, 4096, 14336, 8, 2), "G-O": (16384, 2048, 1024, 64, 8), "G-F": (16384, 2048, 768, 128, 8)}
    for name, row in want.items():
        c = CONFIGS[name]
        ok &= (c["tokens"], c["d_model"], c["d_ff"], c["experts"], c["k"]) == row
    ok &= abs(forward_flop(CONFIGS["G-O"]) - 2.0 * 16384 * 8 * 2048 * 1024 * 3) < 1
    b = zipf_bias(64).double()
    p = b.exp()
    ok &= abs(p.sum().item() - 1) < 1e-6                              # a distribution
    ok &= abs(p[0].item() / p[1].item() - 2 ** 1.2) < 1e-4             # p1/p2 = 2^1.2
    ok &= abs(p[9].item() / p[39].item() - 4 ** 1.2) < 1e-4             # p10/p40 = 4^1.2
    ok &= bool((p[1:] < p[:-1]).all())                                 # popularity falls with rank
    ok &= bool((router_bias("none", 8) == 0).all())

    # Dispatch: every assignment lands in its expert's padded group, once.
    torch.manual_seed(0)
    idx = torch.randint(0, 5, (37, 3))
    for align in (1, 4):
        tok, order, dest, offsets, rows = dispatch_plan(idx, 5, align)
        ends = offsets.tolist()
        begins = [0] + ends[:-1]
        flat = idx.reshape(-1)
        ok &= sorted(dest.tolist()) == sorted(set(dest.tolist())) and max(dest.tolist()) < rows
        for j in range(flat.numel()):
            e = flat[order[j]].item()
            ok &= begins[e] <= dest[j].item() < ends[e] and tok[j].item() == order[j].item() // 3
        ok &= all((end - begin) % align == 0 for begin, end in zip(begins, ends))

    # Both implementations agree in float64 on a small layer (the grouped one
    # through the loop stand-in of _grouped_mm), with and without the skew.
    c = dict(tokens=40, d_model=16, d_ff=12, experts=6, k=2)
    w = moe_weights(c, "cpu", torch.float64, seed=1)
    x = torch.randn(c["tokens"], c["d_model"], dtype=torch.float64)
    G = torch.randn_like(x)
    for skew in ("none", "zipf"):
        bias = router_bias(skew, c["experts"]).double()
        for align in (1, 8):
            ok &= check_same(lambda v: eager_loop(v, w, bias, c["k"]),
                             lambda v: grouped(v, w, bias, c["k"], loop_grouped_mm, align), x, w, G, 1e-10, 1e-12)
    # The skew shifts traffic to the popular experts.
    c = dict(tokens=4096, d_model=64, d_ff=8, experts=16, k=2)
    w = moe_weights(c, "cpu", torch.float32, seed=2)
    x = torch.randn(c["tokens"], c["d_model"])
    with torch.no_grad():
        _, flat_idx = route(x, w, router_bias("zipf", 16), 2)
        counts = torch.bincount(flat_idx.reshape(-1), minlength=16)
        _, plain_idx = route(x, w, router_bias("none", 16), 2)
        plain = torch.bincount(plain_idx.reshape(-1), minlength=16)
    ok &= counts[0].item() > 3 * counts[-1].item() and counts[0].item() > plain[0].item()
    print(f"moe_torch_cuda self-test: {'ok' if ok else 'FAILED'} (torch {torch.__version__}; "
          f"zipf tokens/expert {counts.tolist()})", file=sys.stderr)
    return 0 if ok else 1


# ---- timing ----------------------------------------------------------------------


def summarize(ms):
    ms = sorted(ms)
    at = lambda q: ms[int(q * (len(ms) - 1) + 0.5)]
    return {"median_ms": at(0.5), "p10_ms": at(0.1), "p90_ms": at(0.9)}


def interleaved(runs, warmup, reps):
    """CUDA events on the current stream around each run, interleaved A B A B."""
    for _ in range(warmup):
        for r in runs:
            r()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = [[] for _ in runs]
    for _ in range(reps):
        for i, r in enumerate(runs):
            start.record()
            r()
            stop.record()
            stop.synchronize()
            times[i].append(start.elapsed_time(stop))
    return [summarize(t) for t in times]


def copy_gbps(warmup, reps):
    """Device-to-device copy bandwidth of 1 GiB (bytes read + written)."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    s = interleaved([lambda: dst.copy_(src)], warmup, reps)[0]
    return 2.0 * src.numel() / (s["median_ms"] * 1e6)


def bench_config(name, skew, a, gpu, copy_bw):
    c = CONFIGS[name]
    torch.manual_seed(a.seed)
    dev, dtype = "cuda", torch.bfloat16
    w = moe_weights(c, dev, dtype, a.seed)
    bias = router_bias(skew, c["experts"]).to(dev)
    x = torch.randn(c["tokens"], c["d_model"], device=dev).to(dtype).requires_grad_()
    G = torch.randn(c["tokens"], c["d_model"], device=dev).to(dtype)
    k = c["k"]
    rows = c["tokens"] * k
    with torch.no_grad():
        _, idx = route(x, w, bias, k)
        per_expert = torch.bincount(idx.reshape(-1), minlength=c["experts"]).float()
    common = {"config": name, "skew": skew, "backend": None, "dtype": "bf16", "threads": 1, "clock": "cuda-events",
              "gpu": gpu, "torch": torch.__version__, "tokens_per_expert": rows / c["experts"],
              "max_tokens_per_expert": per_expert.max().item(), "tf32": "off"}

    impls = [("torch-eager-loop", lambda v: eager_loop(v, w, bias, k))]
    if grouped_mm_available():
        gmm = lambda m, b, offs: torch._grouped_mm(m, b, offs=offs)
        chosen = None
        for align in (1, 16):  # some builds want 16-row groups; pad only if they do
            try:
                fn = lambda v, al=align: grouped(v, w, bias, k, gmm, al)
                print(f"{name} {skew}: torch-grouped-mm (groups aligned to {align}) vs the eager loop:",
                      file=sys.stderr)
                if not check_same(impls[0][1], fn, x, w, G, a.rtol, a.atol):
                    print(json.dumps({**common, "bench": "moe_layer_check", "backend": "torch-grouped-mm",
                                      "ok": False}), flush=True)
                    return False
                chosen = (align, fn)
                break
            except RuntimeError as e:
                print(f"  _grouped_mm with {align}-row groups failed: {e}", file=sys.stderr)
        if chosen is None:
            print(json.dumps({**common, "bench": "moe_layer", "backend": "torch-grouped-mm",
                              "unavailable": "torch._grouped_mm failed on these shapes"}), flush=True)
        else:
            common_align = chosen[0]
            impls.append(("torch-grouped-mm", chosen[1]))
    else:
        print(json.dumps({**common, "bench": "moe_layer", "backend": "torch-grouped-mm",
                          "unavailable": f"torch {torch.__version__} has no torch._grouped_mm (needs >= 2.8)"}),
              flush=True)

    # The ceiling: one dense bf16 cuBLAS GEMM per expert matrix over all rows.
    a1 = torch.randn(rows, c["d_model"], device=dev, dtype=dtype)
    b1 = torch.randn(c["d_model"], c["d_ff"], device=dev, dtype=dtype)
    a2 = torch.randn(rows, c["d_ff"], device=dev, dtype=dtype)
    b2 = torch.randn(c["d_ff"], c["d_model"], device=dev, dtype=dtype)

    def dense():
        a1.mm(b1)
        a1.mm(b1)
        a2.mm(b2)

    runs = [dense]
    for _, fn in impls:
        runs.append(lambda fn=fn: fn(x))
        runs.append(lambda fn=fn: fn(x).backward(G))
    s = interleaved(runs, a.warmup, a.reps)
    flop = forward_flop(c)
    ceiling_gflops = flop / (s[0]["median_ms"] * 1e6)
    ceiling = f"torch.mm bf16 {rows}x{c['d_model']}x{c['d_ff']} x{EXPERT_MATRICES}"
    print(json.dumps({**common, "bench": "ceilings", "backend": "cuda", "dense_median_ms": s[0]["median_ms"],
                      "dense_gflops": ceiling_gflops, "copy_gbps": copy_bw}), flush=True)
    for i, (impl, _) in enumerate(impls):
        for pass_name, st, f in (("fwd", s[1 + 2 * i], flop), ("fwd+bwd", s[2 + 2 * i], 3 * flop)):
            line = {**common, "bench": "moe_layer", "backend": impl, "pass": pass_name, **st,
                    "gflops": f / (st["median_ms"] * 1e6), "ceiling": ceiling, "ceiling_gflops": ceiling_gflops,
                    "copy_gbps": copy_bw}
            if impl == "torch-grouped-mm":
                line["group_align"] = common_align
            print(json.dumps(line), flush=True)
            print(f"{name} {skew:4s} {impl:17s} {pass_name:8s} {st['median_ms']:9.3f} ms "
                  f"[{st['p10_ms']:8.3f}, {st['p90_ms']:8.3f}] {f / (st['median_ms'] * 1e6) / 1e3:7.1f} TFLOP/s "
                  f"(dense ceiling {ceiling_gflops / 1e3:.1f})", file=sys.stderr)
    w.zero_grad()
    return True


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="G-O", help="G-M, G-O or G-F")
    p.add_argument("--all", action="store_true", help="every configuration")
    p.add_argument("--skew", default="none", help="none, zipf, or a comma-separated list of them")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--rtol", type=float, default=2e-2, help="bf16: relative tolerance of the numerics check")
    p.add_argument("--atol", type=float, default=2e-2,
                   help="absolute tolerance, relative to the largest |value| of each tensor")
    p.add_argument("--self-test", action="store_true", help="check the CPU-side helpers and exit (no GPU needed)")
    return p.parse_args(argv)


def main():
    a = parse_args()
    if a.self_test:
        return self_test()
    names = list(CONFIGS) if a.all else [a.config]
    skews = [s.strip() for s in a.skew.split(",") if s.strip()]
    for n in names:
        if n not in CONFIGS:
            print(f"moe_torch_cuda: unknown --config {n} ({', '.join(CONFIGS)})", file=sys.stderr)
            return 2
    for s in skews:
        if s not in ("none", "zipf"):
            print(f"moe_torch_cuda: --skew: '{s}' is not none or zipf", file=sys.stderr)
            return 2
    if not torch.cuda.is_available():
        print(json.dumps({"bench": "moe_layer", "backend": "torch-eager-loop", "torch": torch.__version__,
                          "unavailable": "torch.cuda.is_available() is False"}))
        print("moe_torch_cuda: no CUDA device visible to torch", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    gpu = torch.cuda.get_device_name()
    copy_bw = copy_gbps(a.warmup, a.reps)
    print(f"moe_torch_cuda: torch {torch.__version__} on {gpu}; copy {copy_bw:.0f} GB/s; "
          f"_grouped_mm {'available' if grouped_mm_available() else 'missing'}", file=sys.stderr)
    ok = True
    for n in names:
        for s in skews:
            ok &= bench_config(n, s, a, gpu, copy_bw)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

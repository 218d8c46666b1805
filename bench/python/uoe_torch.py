#!/usr/bin/python3
"""PyTorch baseline for bench_uoe: the Union-of-Experts block written in the
style of the reference (YujiaoYang-work/UoE; uoe-coe.md 1.3-1.4), in plain
PyTorch, run on moekit's dumped weights.

    SwitchGate (Linear d -> E with bias, softmax), each token marks its top_k
    experts, scores p·mark normalised over the BATCH axis (+ eps), each expert
    keeps per sample the top-c positions (torch.topk) sorted ascending
    (torch.sort): ids (E, B, c); xs = x[ids] (E, B·c, d);
    SMHA  q, k, v = baddbmm(b, xs, W) per head (H, B·c, dh), attention on the
          compacted sequences (causal on compacted indices: the positions are
          sorted, so that is causal on the original ones), o = bmm(a, Wo),
          scatter_add of every head's o back to the tokens, + bo once;
    UoME  h = gelu(baddbmm(b1, xs, W1)) (E, B·c, Fe), o = bmm(h, W2),
          scatter_add back, + b2 once;
    block h = x + SMHA(LN1(x)); y = h + UoME(LN2(h)).

The reference adds each row-parallel expert's own output bias per copy; moekit
(and this file) adds the dense layer's bias once per token, so that capacity 1
is the dense block exactly. Faithful mode: outputs weighted 1 (the router gets
no gradient); gated: each expert's output times its gate p[token, e]. The
"dense" dump runs the plain dense block (addmm projections, attention over
(B·H, S, S), the dense GELU FFN) for the capacity scaling on this side too.

    bench_uoe --dump DIR --no-time
    uoe_torch.py --check DIR                      # selections, output and every gradient vs moekit's
    uoe_torch.py --time DIR --threads 1           # checks first, then times (JSON lines)
    uoe_torch.py --time DIR --moekit uoe.jsonl    # + speed-up vs bench_uoe's lines
    uoe_torch.py --time DIR --parts               # + attention, FFN and selection alone, as bench_uoe --parts

--check exits 1 when a selection differs or a tensor differs by more than
rtol * |ref| + atol * max|ref| (fp32: 1e-4, 1e-5). Timing follows bench_uoe:
interleaved, warm-ups, median and spread on the wall clock and on this
thread's CPU time, loss = sum(out * G), JSON lines with the same config names
on stdout, a table on stderr.
"""
import argparse
import glob
import json
import math
import os
import sys


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", metavar="DIR", help="check every DIR/<config>.safetensors, then exit")
    mode.add_argument("--time", metavar="DIR", help="check, then time the configs dumped in DIR")
    p.add_argument("--configs", default=None, help="comma-separated config names (default: every dump in DIR)")
    p.add_argument("--threads", default="1", help="comma-separated torch.set_num_threads counts (--time)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--moekit", default=None, help="bench_uoe JSON lines, for speed-ups at equal threads")
    p.add_argument("--parts", action="store_true",
                   help="also time each config's attention and FFN alone (fwd+bwd on x) and the selections, as "
                        "bench_uoe --parts")
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
import torch.nn.functional as F  # noqa: E402

from bench_common import blas_kernel, compare, interleaved_clocks, read_safetensors  # noqa: E402
from coe_torch import cpu_model, set_threads  # noqa: E402


# ---------------------------------------------------------------- the reference's forward, restated

def select(rows, w, b, batch, seq, top_k, c, gated, eps):
    """SwitchGate + data selection: ids (E, B, c) flat tokens b·seq + s, each
    row's positions ascending; the gates (E, B, c) when gated, else None."""
    p = torch.softmax(torch.addmm(b, rows, w), dim=-1)               # (T, E)
    e = p.shape[1]
    mark = torch.zeros_like(p).scatter_(1, p.topk(top_k, dim=-1).indices, 1.0)
    ps = (p.detach() * mark).view(batch, seq, e)                     # gates only select
    g = ps / (ps.sum(dim=0, keepdim=True) + eps)                     # over the batch axis, as the reference
    sel = g.permute(2, 0, 1).topk(c, dim=-1).indices.sort(dim=-1).values  # (E, B, c) temporal order
    ids = sel + (torch.arange(batch) * seq).view(1, batch, 1)        # (E, B, c)
    gate = p.view(batch, seq, e).permute(2, 0, 1).gather(2, sel) if gated else None
    return ids, gate


def scatter_back(o, ids, gate, tokens):
    """Σ over experts of o (E, B·c, d) [× gate] added at the tokens ids: (T, d)."""
    d = o.shape[-1]
    if gate is not None:
        o = o * gate.reshape(*o.shape[:2], 1)
    idx = ids.reshape(-1, 1).expand(-1, d)
    return torch.zeros(tokens, d, dtype=o.dtype).scatter_add(0, idx, o.reshape(-1, d))


def causal_mask(n):
    return torch.ones(n, n, dtype=torch.bool).triu(1)                # True above the diagonal: hidden


def attend(q, k, v, causal):
    """softmax(q·kᵀ/√dh [causal]) v over (rows, n, dh)."""
    s = torch.bmm(q, k.transpose(1, 2)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        s = s.masked_fill(causal_mask(s.shape[-1]), float("-inf"))
    return torch.bmm(torch.softmax(s, dim=-1), v)


def smha(x, W, m):
    """Selective multi-head attention of x (B, S, d): one expert per head."""
    batch, seq, d = x.shape
    h, c = m["heads"], m["slots"]
    rows = x.reshape(batch * seq, d)
    ids, gate = select(rows, W["attention.router.weight"], W["attention.router.bias"], batch, seq,
                       m["attn_top_k"], c, m["gated"], m["epsilon"])
    xs = rows.index_select(0, ids.reshape(-1)).view(h, batch * c, d)  # (H, B·c, d)
    proj = lambda n: torch.baddbmm(W[f"attention.b{n}"].unsqueeze(1), xs, W[f"attention.w{n}"])  # noqa: E731
    q, k, v = (proj(n).view(h * batch, c, -1) for n in "qkv")        # (H·B, c, dh)
    a = attend(q, k, v, m["causal"]).view(h, batch * c, -1)          # (H, B·c, dh)
    o = torch.bmm(a, W["attention.wo"])                              # (H, B·c, d)
    out = scatter_back(o, ids, gate, batch * seq) + W["attention.bo"]
    return out.view(batch, seq, d)


def uome(x, W, m):
    """Union of MLP experts of x (B, S, d): E column/row-parallel slices."""
    batch, seq, d = x.shape
    e, c = m["experts"], m["slots"]
    rows = x.reshape(batch * seq, d)
    ids, gate = select(rows, W["moe.router.weight"], W["moe.router.bias"], batch, seq, m["top_k"], c,
                       m["gated"], m["epsilon"])
    xs = rows.index_select(0, ids.reshape(-1)).view(e, batch * c, d)  # (E, B·c, d)
    hid = F.gelu(torch.baddbmm(W["moe.experts.b1"].unsqueeze(1), xs, W["moe.experts.w1"]))  # (E, B·c, Fe)
    o = torch.bmm(hid, W["moe.experts.w2"])                          # (E, B·c, d)
    out = scatter_back(o, ids, gate, batch * seq) + W["moe.bias"]
    return out.view(batch, seq, d)


def mha(x, W, m):
    """The dense block's multi-head attention (moekit's nn::multi_head_attention)."""
    batch, seq, d = x.shape
    h = m["heads"]
    rows = x.reshape(batch * seq, d)
    proj = lambda n: torch.addmm(W[f"attention.{n}_proj.bias"], rows, W[f"attention.{n}_proj.weight"])  # noqa: E731
    split = lambda t: t.view(batch, seq, h, -1).transpose(1, 2).reshape(batch * h, seq, -1)  # noqa: E731
    a = attend(split(proj("q")), split(proj("k")), split(proj("v")), m["causal"])        # (B·H, S, dh)
    a = a.view(batch, h, seq, -1).transpose(1, 2).reshape(batch * seq, d)
    return torch.addmm(W["attention.out_proj.bias"], a, W["attention.out_proj.weight"]).view(batch, seq, d)


def dense_ffn(x, W, m):
    rows = x.reshape(-1, x.shape[-1])
    hid = F.gelu(torch.addmm(W["moe.fc1.bias"], rows, W["moe.fc1.weight"]))
    return torch.addmm(W["moe.fc2.bias"], hid, W["moe.fc2.weight"]).view(x.shape)


def block(x, W, m):
    """Pre-norm: h = x + attn(LN1(x)); y = h + ffn(LN2(h))."""
    d = x.shape[-1]
    attn, ffn = (mha, dense_ffn) if m["dense"] else (smha, uome)
    h = x + attn(F.layer_norm(x, (d,), W["norm1.weight"], W["norm1.bias"], m["ln_eps"]), W, m)
    return h + ffn(F.layer_norm(h, (d,), W["norm2.weight"], W["norm2.bias"], m["ln_eps"]), W, m)


# ---------------------------------------------------------------- moekit's dumps

NOT_WEIGHTS = ("x", "G", "out")


def load(path):
    """(metadata as numbers, dump, weights {moekit name: leaf requiring grad}, x (B, S, d) leaf, G)."""
    meta, t = read_safetensors(path)
    m = {k: int(meta[k]) for k in ("batch", "seq", "d_model", "heads", "d_ff", "experts", "top_k", "attn_top_k",
                                   "slots", "causal")}
    m.update(config=meta["config"], dense=meta["block"] == "dense", mode=meta["mode"],
             gated=meta["mode"] == "gated", epsilon=float(meta["epsilon"]), ln_eps=float(meta["ln_eps"]),
             capacity=float(meta["capacity"]))
    if m["mode"] == "causal" and not m["dense"]:
        sys.exit(f"uoe_torch: {path}: causal (arrival-order) selection is not restated here")
    W = {n: v.clone().requires_grad_() for n, v in t.items()
         if n not in NOT_WEIGHTS and not n.startswith(("grad.", "select."))}
    shape = (m["batch"], m["seq"], m["d_model"])
    x = t["x"].clone().view(shape).requires_grad_()
    return m, t, W, x, t["G"].view(shape)


def forward_flop(m):
    """Matrix FLOPs of one forward, as bench_uoe counts them."""
    b, s, d, f, c = (float(m[k]) for k in ("batch", "seq", "d_model", "d_ff", "slots"))
    body = 8 * b * c * d * d + 4 * b * c * c * d + 4 * b * c * d * f
    return body if m["dense"] else body + 2 * b * s * d * (m["heads"] + m["experts"])


# ---------------------------------------------------------------- numerics

def selections(x, W, m):
    """This side's selections on the block's own inputs: (SMHA ids (H·B·c), UoME ids (E, B, c))."""
    d = x.shape[-1]
    with torch.no_grad():
        xn = F.layer_norm(x, (d,), W["norm1.weight"], W["norm1.bias"], m["ln_eps"])
        rows = xn.reshape(-1, d)
        a, _ = select(rows, W["attention.router.weight"], W["attention.router.bias"], m["batch"], m["seq"],
                      m["attn_top_k"], m["slots"], False, m["epsilon"])
        h = x + smha(xn, W, m)
        hn = F.layer_norm(h, (d,), W["norm2.weight"], W["norm2.bias"], m["ln_eps"]).reshape(-1, d)
        f, _ = select(hn, W["moe.router.weight"], W["moe.router.bias"], m["batch"], m["seq"], m["top_k"],
                      m["slots"], False, m["epsilon"])
    return a.reshape(-1), f


# softmax(q·kᵀ) does not change when every key of a query gets the same q·b_k,
# so the key bias's gradient is 0 but for rounding: its sibling gives the scale.
KEY_BIASES = {"attention.bk": "attention.bq", "attention.k_proj.bias": "attention.q_proj.bias"}


def check(path, rtol, atol):
    """One forward+backward on the dump: selections, output and every gradient vs moekit's."""
    m, t, W, x, G = load(path)
    print(f"{m['config']}: {'dense' if m['dense'] else m['mode']} c={m['slots']} ({path})", file=sys.stderr)
    ok = True
    if not m["dense"]:
        a, f = selections(x, W, m)
        differ = int((a != t["select.attention.token"].long()).sum())
        print(f"  select.attention        {differ} of {a.numel()} slots hold other tokens "
              f"{'ok' if differ == 0 else 'MISMATCH'}", file=sys.stderr)
        ok &= differ == 0
        tokens = m["batch"] * m["seq"]  # moekit's plan: (token, expert) pairs grouped by expert
        ours = (torch.arange(m["experts"]).view(-1, 1, 1) * tokens + f).reshape(-1).sort().values
        theirs = (t["select.ffn.expert"].long() * tokens + t["select.ffn.token"].long()).sort().values
        same = ours.numel() == theirs.numel() and bool((ours == theirs).all())
        print(f"  select.ffn              {ours.numel()} vs {theirs.numel()} (token, expert) pairs "
              f"{'ok' if same else 'MISMATCH'}", file=sys.stderr)
        ok &= same
    out = block(x, W, m)
    (out * G).sum().backward()
    ok &= compare("out", out, t["out"], rtol, atol)
    ok &= compare("grad.x", x.grad, t["grad.x"], rtol, atol)
    for name, w in W.items():
        if "grad." + name not in t:
            continue
        g = w.grad if w.grad is not None else torch.zeros_like(w)
        if name in KEY_BIASES:  # zero up to rounding on both sides: checked against the query bias's scale
            sibling = t["grad." + KEY_BIASES[name]].abs().max().item()
            err = (g - t["grad." + name]).abs().max().item()
            within = err <= atol * sibling
            print(f"  grad.{name:17s} max |err| {err:.3e}, max |value| {g.abs().max().item():.3e} and "
                  f"{t['grad.' + name].abs().max().item():.3e} (0 in exact arithmetic), vs {atol} x max |grad of "
                  f"the query bias| {sibling:.3e} {'ok' if within else 'MISMATCH'}", file=sys.stderr)
            ok &= within
        else:
            ok &= compare("grad." + name, g, t["grad." + name], rtol, atol)
    return ok


# ---------------------------------------------------------------- timing

def moekit_times(path):
    """{(config, pass, threads): (wall median_ms, cpu median_ms)} from bench_uoe's JSON lines."""
    if not path:
        return {}
    lines = [json.loads(line) for line in open(path) if line.startswith("{")]
    out = {(l["config"], l["pass"], int(l["threads"])): (l["median_ms"], l["cpu_median_ms"])
           for l in lines if l.get("bench") == "uoe_block"}
    out.update({(l["config"], l["part"], int(l["threads"])): (l["median_ms"], l["cpu_median_ms"])
                for l in lines if l.get("bench") == "uoe_block_part"})
    return out


def time_all(layers, threads, a, theirs):
    """Every config's forward and fwd+bwd, interleaved, at `threads`; JSON lines and a table."""
    set_threads(threads)
    m0 = layers[0][0]
    t_rows, d, f = m0["batch"] * m0["seq"], m0["d_model"], m0["d_ff"]
    xa, xh = torch.randn(t_rows, d), torch.randn(t_rows, f)
    wd, w1, w2 = torch.randn(d, d), torch.randn(d, f), torch.randn(f, d)
    runs = []
    for m, _, W, x, G in layers:
        runs.append(lambda m=m, W=W, x=x: block(x, W, m))
        runs.append(lambda m=m, W=W, x=x, G=G: (block(x, W, m) * G).sum().backward())
    # the ceiling: bench_uoe's dense forward GEMM shapes
    runs.append(lambda: ([xa.mm(wd) for _ in range(4)], xa.mm(w1), xh.mm(w2)))
    wall, cpu = interleaved_clocks(runs, a.warmup, a.reps, ("wall", "cpu"))
    for _, _, W, x, _ in layers:  # the timed backwards accumulated into them
        x.grad = None
        for w in W.values():
            w.grad = None
    ceiling = f"torch.mm dense fwd 4x{t_rows}x{d}x{d} + {t_rows}x{d}x{f} + {t_rows}x{f}x{d}"
    ceiling_gflops = 2.0 * t_rows * d * (4 * d + 2 * f) / (wall[-1]["median_ms"] * 1e6)
    core, cpu_name, wait = blas_kernel(), cpu_model(), os.environ.get("OMP_WAIT_POLICY", "(unset)")
    dense = next((i for i, layer in enumerate(layers) if layer[0]["dense"]), None)
    for i, (m, _, _, _, _) in enumerate(layers):
        for j, (name, fl) in enumerate((("fwd", forward_flop(m)), ("fwd+bwd", 3 * forward_flop(m)))):
            st, cst = wall[2 * i + j], cpu[2 * i + j]
            line = {"bench": "uoe_block", "config": m["config"], "backend": "cpu",
                    "impl": "torch-eager-dense" if m["dense"] else "torch-reference-bmm-scatter_add",
                    "dtype": "f32", "threads": threads, "pass": name, **st,
                    **{"cpu_" + k: v for k, v in cst.items()}, "gflops": fl / (st["median_ms"] * 1e6),
                    "cpu_gflops": fl / (cst["median_ms"] * 1e6), "gflop": fl / 1e9,
                    "mode": "dense" if m["dense"] else m["mode"], "capacity": m["capacity"], "slots": m["slots"],
                    "machine": os.uname().nodename, "cpu": cpu_name, "blas_core": core, "blas_kernel": core,
                    "omp_wait_policy": wait,
                    "ceiling": ceiling, "ceiling_gflops": ceiling_gflops, "torch": torch.__version__}
            if dense is not None:
                line.update({"flop_ratio_to_dense": forward_flop(m) / forward_flop(layers[dense][0]),
                             "ratio_to_dense": st["median_ms"] / wall[2 * dense + j]["median_ms"],
                             "cpu_ratio_to_dense": cst["median_ms"] / cpu[2 * dense + j]["median_ms"]})
            ours = theirs.get((m["config"], name, threads))
            if ours:  # torch time / moekit's
                line.update({"moekit_median_ms": ours[0], "moekit_cpu_median_ms": ours[1],
                             "speedup": st["median_ms"] / ours[0], "cpu_speedup": cst["median_ms"] / ours[1]})
            print(json.dumps(line), flush=True)
            print(f"{m['config']:14s} torch {threads}T {name:8s} {st['median_ms']:9.2f} ms "
                  f"[{st['p10_ms']:8.2f}, {st['p90_ms']:8.2f}] cpu {cst['median_ms']:9.2f} ms "
                  f"{fl / (cst['median_ms'] * 1e6):6.1f} GFLOP/s"
                  + (f"  moekit cpu {ours[1]:8.2f} ms, speed-up {cst['median_ms'] / ours[1]:5.2f}x (wall "
                     f"{st['median_ms'] / ours[0]:5.2f}x)" if ours else ""), file=sys.stderr)
    print(f"ceiling {ceiling}: {ceiling_gflops:.1f} GFLOP/s; {cpu_name}, OpenBLAS {core}, OMP_WAIT_POLICY {wait}",
          file=sys.stderr)


ORDER = lambda m: (0 if m["dense"] else 1, -m["capacity"], m["mode"])  # noqa: E731


def dumps(directory, configs):
    paths = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
    if configs:
        paths = [os.path.join(directory, c.strip() + ".safetensors") for c in configs.split(",") if c.strip()]
    if not paths:
        sys.exit(f"uoe_torch: no <config>.safetensors in {directory} (run bench_uoe --dump {directory} --no-time)")
    return paths


def time_parts(layers, threads, a, theirs):
    """As bench_uoe --parts: attention and FFN sublayers alone (fwd+bwd on x, no norm, no residual) and
    the two routers' selections (forward), interleaved; JSON lines with "part"."""
    set_threads(threads)
    runs, names = [], []
    for m, _, W, x, G in layers:
        attn, ffn = (mha, dense_ffn) if m["dense"] else (smha, uome)
        for part, f in (("attention", attn), ("ffn", ffn)):
            runs.append(lambda f=f, m=m, W=W, x=x, G=G: (f(x, W, m) * G).sum().backward())
            names.append((m["config"], part))
        if not m["dense"]:
            def both(m=m, W=W, x=x):
                with torch.no_grad():
                    rows = x.reshape(-1, x.shape[-1])
                    for r, k in (("attention", m["attn_top_k"]), ("moe", m["top_k"])):
                        select(rows, W[r + ".router.weight"], W[r + ".router.bias"], m["batch"], m["seq"], k,
                               m["slots"], m["gated"], m["epsilon"])
            runs.append(both)
            names.append((m["config"], "select"))
    wall, cpu = interleaved_clocks(runs, a.warmup, a.reps, ("wall", "cpu"))
    print("parts (fwd+bwd; select: forward of both routers' selections):", file=sys.stderr)
    for (config, part), st, cst in zip(names, wall, cpu):
        line = {"bench": "uoe_block_part", "config": config, "part": part, "threads": threads,
                "pass": "fwd" if part == "select" else "fwd+bwd", **st, **{"cpu_" + k: v for k, v in cst.items()},
                "machine": os.uname().nodename, "blas_core": blas_kernel(), "blas_kernel": blas_kernel(),
                "torch": torch.__version__}
        ours = theirs.get((config, part, threads))
        if ours:
            line.update({"moekit_median_ms": ours[0], "moekit_cpu_median_ms": ours[1],
                         "speedup": st["median_ms"] / ours[0], "cpu_speedup": cst["median_ms"] / ours[1]})
        print(json.dumps(line), flush=True)
        print(f"  {config:14s} {part:10s} {st['median_ms']:9.2f} ms wall {cst['median_ms']:9.2f} ms cpu"
              + (f"  moekit cpu {ours[1]:8.2f} ms, torch/moekit {cst['median_ms'] / ours[1]:5.2f}x" if ours else ""),
              file=sys.stderr)


def main():
    a = ARGS
    directory = a.check or a.time
    paths = dumps(directory, a.configs)
    print(f"uoe_torch: torch {torch.__version__}, OpenBLAS {blas_kernel()}, OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', '(unset)')}", file=sys.stderr)
    set_threads(THREADS[0])
    ok = all([check(p, a.rtol, a.atol) for p in paths])
    if not ok:
        print("uoe_torch: selections, outputs or gradients differ from moekit's" + ("; not timing" if a.time else ""),
              file=sys.stderr)
        return 1
    print(f"uoe_torch: all {len(paths)} configs match (rtol {a.rtol}, atol {a.atol} x max |ref|)", file=sys.stderr)
    if a.check:
        return 0
    layers = sorted((load(p) for p in paths), key=lambda layer: ORDER(layer[0]))
    theirs = moekit_times(a.moekit)
    for n in THREADS:
        time_all(layers, n, a, theirs)
        if a.parts:
            time_parts(layers, n, a, theirs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

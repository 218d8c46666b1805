"""Shared by the PyTorch baselines (moe_torch.py, coe_torch.py, uoe_torch.py,
mlp_torch.py, spmm_torch.py): reading the safetensors dumps the moekit benches
write, comparing a result with moekit's, the timing protocol of bench_util.hpp
(interleaved runs, median and spread), and the BLAS kernel every JSON line
names ("blas_kernel", as bench_util.hpp's json_line)."""
import ctypes
import json
import struct
import sys
import time


def blas_kernel():
    """OpenBLAS's kernel name (openblas_get_corename) in libblas.so.3, the BLAS
    torch loaded here (call it after importing torch), or why there is none.
    Compare it with the "blas_kernel" of moekit's lines: both sides must run
    the same kernel (bench/compare sets OPENBLAS_CORETYPE to moekit's)."""
    try:
        f = ctypes.CDLL("libblas.so.3").openblas_get_corename
    except (OSError, AttributeError):
        return "unknown (not OpenBLAS)"
    f.restype = ctypes.c_char_p
    return f().decode()


def read_safetensors(path):
    """(metadata, {name: tensor}): u64 header length, JSON header, raw little-endian data."""
    import torch

    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = bytearray(blob[8 + n:])
    dtypes = {"F32": (torch.float32, 4), "F64": (torch.float64, 8), "I32": (torch.int32, 4), "I64": (torch.int64, 8)}
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        dtype, size = dtypes[entry["dtype"]]
        t = torch.frombuffer(data, dtype=dtype, count=(end - begin) // size, offset=begin)
        tensors[name] = t.reshape(entry["shape"]).clone()
    return meta, tensors


def compare(name, got, want, rtol, atol_rel):
    """allclose with atol scaled by the tensor's largest magnitude (got is
    reshaped to want's shape when the sizes agree); prints the errors; True
    when within."""
    got, want = got.detach().double(), want.double()
    if got.numel() != want.numel():
        print(f"  {name}: shape {tuple(got.shape)} != {tuple(want.shape)}", file=sys.stderr)
        return False
    got = got.reshape(want.shape)
    scale = max(want.abs().max().item(), 1e-30)
    err = (got - want).abs()
    max_rel = (err / want.abs().clamp_min(1e-30)).max().item()
    ok = bool((err <= atol_rel * scale + rtol * want.abs()).all())
    print(f"  {name:22s} max |err| {err.max().item():.3e} (max |ref| {scale:.3e}, max |err|/max |ref| "
          f"{err.max().item() / scale:.2e}, max rel {max_rel:.2e}) {'ok' if ok else 'MISMATCH'}", file=sys.stderr)
    return ok


def summarize(ms):
    ms = sorted(ms)
    at = lambda q: ms[int(q * (len(ms) - 1) + 0.5)]  # noqa: E731
    return {"median_ms": at(0.5), "p10_ms": at(0.1), "p90_ms": at(0.9)}


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def interleaved_clocks(runs, warmup, reps, clocks=("wall", "cpu")):
    """Times the runs interleaved (A B A B ...) on every clock of `clocks` at
    once ("wall": perf_counter, "cpu": this thread's CPU time); out[c][i] is
    summarize() of run i on clocks[c]."""
    nows = [CLOCKS[c] for c in clocks]
    for _ in range(warmup):
        for r in runs:
            r()
    times = [[[] for _ in runs] for _ in nows]
    for _ in range(reps):
        for i, r in enumerate(runs):
            t0 = [now() for now in nows]
            r()
            t1 = [now() for now in reversed(nows)][::-1]
            for c in range(len(nows)):
                times[c][i].append((t1[c] - t0[c]) * 1e3)
    return [[summarize(t) for t in per_clock] for per_clock in times]


def interleaved(runs, warmup, reps, clock="wall"):
    """Times the runs interleaved (A B A B ...) on the wall clock or this
    thread's CPU time ("cpu"); one summarize() per run."""
    return interleaved_clocks(runs, warmup, reps, (clock,))[0]

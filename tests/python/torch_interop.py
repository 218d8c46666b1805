#!/usr/bin/python3
"""PyTorch <-> moekit round trips of an MoE layer's state (ctest python.torch_interop).

    torch_interop.py <moekit_test_io> <scratch dir> [style ...]

For each style (default: plain mixtral olmoe switch):
  export: moekit (the hidden Catch2 case [.torch_interop]) writes a seeded MoE
          layer's torch state after one AdamW step; an equivalent torch.nn.Module
          loads it with load_state_dict(strict=True) and must reproduce moekit's
          output, and torch.optim.AdamW loads the optimizer state and must take
          the same second step as moekit.
  import: PyTorch trains its own module for one AdamW step and saves its state
          dict and optimizer state (docs/interop.md's naming); moekit loads them
          and must reproduce torch's output and second step.
Exits 77 (ctest: skipped) when torch cannot be imported. torch 1.13 has no
safetensors package, so files are read and written here with json + struct.
"""
import json
import os
import struct
import subprocess
import sys

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"SKIPPED: cannot import torch ({e}); install python3-torch")
    sys.exit(77)

TOLERANCE = 1e-5  # fp32, max abs difference
D, FF, E, TOKENS = 8, 16, 4, 32  # the sizes of the C++ side (interop_sizes)
ADAMW = dict(lr=1e-2, weight_decay=0.1)  # interop_adamw
DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "I32": torch.int32}
NAMES = {v: k for k, v in DTYPES.items()}


# ---- safetensors: u64 header length | JSON header | data ----------------------

def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {})
    buf = data[8 + n:]
    out = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        dtype = DTYPES[e["dtype"]]
        flat = torch.frombuffer(bytearray(buf[begin:end]), dtype=dtype) if end > begin else torch.empty(0, dtype=dtype)
        out[name] = flat.reshape(e["shape"])
    return out, metadata


def write_safetensors(path, tensors, metadata=None):
    header = {"__metadata__": metadata or {"format": "pt"}}
    blobs, offset = [], 0
    for name, t in tensors.items():
        blob = t.detach().cpu().contiguous().numpy().tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


# ---- the torch module equivalent to moekit's moe::layer ------------------------

class FFNExpert(nn.Module):
    """wo(act(wi(x))): moekit's ffn_expert (w1, b1, w2, b2)."""

    def __init__(self, names, bias, act):
        super().__init__()
        self.names, self.act = names, act
        setattr(self, names[0], nn.Linear(D, FF, bias=bias))
        setattr(self, names[1], nn.Linear(FF, D, bias=bias))

    def forward(self, x):
        return getattr(self, self.names[1])(self.act(getattr(self, self.names[0])(x)))


class GatedExpert(nn.Module):
    """down(silu(gate(x)) * up(x)): moekit's swiglu_expert (w_gate, w_up, w_down)."""

    def __init__(self, names):
        super().__init__()
        self.names = names
        for name, (i, o) in zip(names, [(D, FF), (D, FF), (FF, D)]):
            setattr(self, name, nn.Linear(i, o, bias=False))

    def forward(self, x):
        gate, up, down = (getattr(self, n) for n in self.names)
        return down(F.silu(gate(x)) * up(x))


class SwitchRouter(nn.Module):
    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(D, E, bias=False)

    def forward(self, x):
        return self.classifier(x)


class SparseMoE(nn.Module):
    """Router logits x W^T, softmax, top-k (renormalised unless Switch), gate-weighted sum of the experts."""

    def __init__(self, style):
        super().__init__()
        self.style = style
        self.k, self.renormalize = (1, False) if style == "switch" else (2, True)
        if style == "switch":
            self.router = SwitchRouter()
            self.experts = nn.ModuleDict({f"expert_{i}": FFNExpert(("wi", "wo"), False, F.relu) for i in range(E)})
        elif style == "plain":
            self.router = nn.Linear(D, E, bias=False)
            self.experts = nn.ModuleList([FFNExpert(("w1", "w2"), True, F.gelu) for _ in range(E)])
        else:
            names = ("w1", "w3", "w2") if style == "mixtral" else ("gate_proj", "up_proj", "down_proj")
            self.gate = nn.Linear(D, E, bias=False)
            self.experts = nn.ModuleList([GatedExpert(names) for _ in range(E)])

    def forward(self, x):
        logits = self.gate(x) if hasattr(self, "gate") else self.router(x)  # (T, E)
        gates, chosen = torch.topk(torch.softmax(logits, dim=-1), self.k, dim=-1)  # (T, k)
        if self.renormalize:
            gates = gates / gates.sum(dim=-1, keepdim=True)
        experts = list(self.experts.values()) if isinstance(self.experts, nn.ModuleDict) else list(self.experts)
        y = torch.zeros_like(x)
        for i, expert in enumerate(experts):
            rows, slot = torch.nonzero(chosen == i, as_tuple=True)
            if rows.numel():
                y = y.index_add(0, rows, expert(x[rows]) * gates[rows, slot].unsqueeze(1))
        return y


BLOCK = {"plain": None, "mixtral": "block_sparse_moe", "olmoe": "mlp", "switch": "mlp"}


class Parent(nn.Module):
    """Holds the layer under the style's block name (as a Hugging Face decoder layer does)."""

    def __init__(self, style):
        super().__init__()
        self.block = BLOCK[style]
        setattr(self, self.block, SparseMoE(style))

    def forward(self, x):
        return getattr(self, self.block)(x)


def make_module(style):
    """The layer itself (plain) or a parent holding it under the style's block name."""
    return SparseMoE(style) if BLOCK[style] is None else Parent(style)


def adamw_step(module, opt, x, r):
    """One step on the loss sum(y * r); every parameter gets a gradient, as in moekit."""
    opt.zero_grad()
    (module(x) * r).sum().backward()
    for p in module.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    opt.step()


def optimizer_state_dict(module, opt, tensors):
    """torch's integer-indexed AdamW state_dict from a file's optim.<name>.<key> entries."""
    state = {}
    for i, (name, _) in enumerate(module.named_parameters()):
        keys = {k: tensors[f"optim.{name}.{k}"] for k in ("step", "exp_avg", "exp_avg_sq") if f"optim.{name}.{k}" in tensors}
        if keys:
            state[i] = keys
    return {"state": state, "param_groups": opt.state_dict()["param_groups"]}


def optimizer_tensors(module, opt):
    """The inverse: optim.<name>.<key> for every entry of torch's state_dict."""
    names = [name for name, _ in module.named_parameters()]
    return {f"optim.{names[i]}.{k}": v for i, s in opt.state_dict()["state"].items() for k, v in s.items()}


def max_diff(a, b):
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def run_moekit(binary, scratch, mode, style):
    env = dict(os.environ, MOEKIT_INTEROP_DIR=scratch, MOEKIT_INTEROP_MODE=mode, MOEKIT_INTEROP_STYLE=style)
    done = subprocess.run([binary, "[.torch_interop]"], env=env, capture_output=True, text=True)
    if done.returncode != 0 or "No tests ran" in done.stdout:
        print(done.stdout, done.stderr)
        raise SystemExit(f"moekit {mode} ({style}) failed with exit code {done.returncode}")
    return done.stdout


def check_export(binary, scratch, style):
    run_moekit(binary, scratch, "export", style)
    state, meta = read_safetensors(os.path.join(scratch, "moekit_state.safetensors"))
    assert meta.get("moekit.style") == style, meta
    io, _ = read_safetensors(os.path.join(scratch, "moekit_io.safetensors"))
    module = make_module(style)
    module.load_state_dict({k: v for k, v in state.items() if not k.startswith("optim.")}, strict=True)
    with torch.no_grad():
        out_diff = (module(io["x"]) - io["y"]).abs().max().item()
    opt = torch.optim.AdamW(module.parameters(), **ADAMW)
    opt.load_state_dict(optimizer_state_dict(module, opt, state))
    adamw_step(module, opt, io["x"], io["r"])
    step2, _ = read_safetensors(os.path.join(scratch, "moekit_step2.safetensors"))
    step_diff = max_diff(step2, module.state_dict())
    print(f"{style}: export: torch reproduces moekit's output to {out_diff:.3g}, "
          f"its second AdamW step to {step_diff:.3g}")
    assert out_diff < TOLERANCE and step_diff < TOLERANCE, (out_diff, step_diff)


def check_import(binary, scratch, style):
    torch.manual_seed(1234)
    module = make_module(style)
    x, r = torch.randn(TOKENS, D), torch.randn(TOKENS, D)
    opt = torch.optim.AdamW(module.parameters(), **ADAMW)
    adamw_step(module, opt, x, r)
    with torch.no_grad():
        y = module(x)
    write_safetensors(os.path.join(scratch, "torch_state.safetensors"),
                      {**module.state_dict(), **optimizer_tensors(module, opt)})
    write_safetensors(os.path.join(scratch, "torch_io.safetensors"), {"x": x, "r": r, "y": y})
    adamw_step(module, opt, x, r)
    write_safetensors(os.path.join(scratch, "torch_step2.safetensors"), module.state_dict())
    report = [line for line in run_moekit(binary, scratch, "import", style).splitlines() if "torch_interop import" in line]
    assert report, "moekit's import case printed no result"
    print(f"{style}: {report[0]}")


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    binary, scratch = sys.argv[1], sys.argv[2]
    os.makedirs(scratch, exist_ok=True)
    print(f"torch {torch.__version__}")
    for style in sys.argv[3:] or ["plain", "mixtral", "olmoe", "switch"]:
        check_export(binary, scratch, style)
        check_import(binary, scratch, style)
    print("torch_interop: all round trips within", TOLERANCE)


if __name__ == "__main__":
    main()

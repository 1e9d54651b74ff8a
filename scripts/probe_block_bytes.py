"""Bytes moved per output pixel by each PyTorch op of the Mamba part (content side), CPU, bf16 autocast.

Why: the engine profile on the H100 puts "copies / elementwise" at ~29 % of the GPU time at 512² without saying
which ops; this lists every op that writes a new tensor, with the bytes it reads and writes per output pixel (the
difference between batch 4 and batch 2, so weights and other per-batch constants drop out). The scans and their
fused epilogue are replaced by an empty result (they are Triton kernels on the GPU, measured on their own).

    python scripts/probe_block_bytes.py [--size 128]
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _nbytes(t: object) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


class _Bytes(TorchDispatchMode):
    """Per (op, input dtypes, output dtype): calls, bytes read, bytes written; views and in-place ops skipped."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[tuple, list[int]] = collections.defaultdict(lambda: [0, 0, 0])

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        ins = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        outs = [o for o in torch.utils._pytree.tree_leaves(out) if isinstance(o, torch.Tensor)]
        storages = {a.untyped_storage().data_ptr() for a in ins}
        if outs and all(o.untyped_storage().data_ptr() in storages for o in outs):
            return out
        dt = lambda t: str(t.dtype).replace("torch.", "")  # noqa: E731
        key = (func.overloadpacket.__name__, "+".join(dt(a) for a in ins[:2]), dt(outs[0]) if outs else "")
        r = self.rows[key]
        r[0] += 1
        r[1] += sum(_nbytes(a) for a in ins)
        r[2] += sum(_nbytes(o) for o in outs)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=128)
    a = ap.parse_args()
    import mambast_cli.model.mambast as M
    from mambast_cli.model import MambaST

    torch.manual_seed(0)
    model = MambaST().eval().requires_grad_(False)
    H = W = a.size
    style = torch.rand(1, 3, H, W)
    M.scan_norm_gate = lambda u, delta, A, Bm, Cm, D, bias, h, w, z, *rest: torch.empty(  # type: ignore[assignment]
        z.shape[0], h * w, z.shape[-1], dtype=z.dtype)

    def run(B: int) -> dict:
        x = torch.rand(B, 3, H, W)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            ss = model.encode_style(style, grid=(H // 8, W // 8))
            rec = _Bytes()
            with rec:
                cs = model.encode_content(x)
                model.decode_features(cs, ss).to(torch.bfloat16)
        return rec.rows

    r2, r4 = run(2), run(4)
    px = 2 * H * W
    rows = []
    for k in set(r2) | set(r4):
        a2, a4 = r2.get(k, [0, 0, 0]), r4.get(k, [0, 0, 0])
        rows.append(((a4[1] - a2[1] + a4[2] - a2[2]) / px, k, a4[0], (a4[1] - a2[1]) / px, (a4[2] - a2[2]) / px))
    print(f"{H}x{W}, bf16 autocast (CPU), per output pixel; calls in one forward")
    print(f"| op | dtypes in → out | calls | read B/px | written B/px |")
    print("|---|---|---|---|---|")
    for tot, (op, din, dout), n, i, o in sorted(rows, reverse=True):
        print(f"| {op} | {din} → {dout} | {n} | {i:.0f} | {o:.0f} |")
    print(f"total: {sum(r[0] for r in rows):.0f} B/px")


if __name__ == "__main__":
    main()

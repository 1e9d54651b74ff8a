"""GPU check of the decoder's stored-states readout (kernels/style_states.py) against the in-loop readouts.

For each shape (grid h × w, G contents on one style, Di = 1024, N = 16): fp32 parity of the merged scan output
(states in fp32 + fp32 matmul vs `cross_scan_fwd_cl`), then the decoder block's `scan_norm_gate` in bf16 through both
forms (MAMBAST_STYLE_STATES=1 / 0): relative difference and median times (triton.testing.do_bench), with the
states kernel and the matmul timed alone; --segments times the states kernel at each given segment count too
(the default count is `states_segments`'s), and checks each against the one-segment states.

    python scripts/check_style_states.py --out style_states.json
"""
from __future__ import annotations

import argparse
import json
import os

import torch
import triton.testing

import mambast_kernels as mk
from mambast_kernels.cross_scan_v2 import cross_scan_fwd_cl
from mambast_kernels.style_states import states_matmul, states_readout_pm, states_segments, style_states

SHAPES = [(64, 64, 64), (64, 64, 16), (32, 32, 64), (128, 128, 16), (135, 240, 16), (135, 240, 4)]


def _inputs(h: int, w: int, G: int, Di: int = 1024, N: int = 16, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    L, K = h * w, 4
    bf = dict(device="cuda", dtype=torch.bfloat16)

    def rn(*shape, **kw):
        return torch.randn(*shape, generator=g, device="cuda").to(kw.get("dtype", torch.float32))

    u = rn(1, L, Di, **bf)
    delta = (rn(1, K, L, Di) * 0.5 - 2.0).to(torch.bfloat16)
    A = -torch.arange(1, N + 1, device="cuda", dtype=torch.float32).repeat(K * Di, 1) * torch.exp(rn(K * Di, 1) * 0.2)
    B, C = rn(1, K, N, L, **bf), rn(1, G, K, N, L, **bf)
    D, bias = rn(K * Di), rn(K * Di) * 0.3
    z = rn(G, L, 2 * Di, **bf)[..., Di:]
    wt, b = 1 + 0.1 * rn(Di), 0.1 * rn(Di)
    return u, delta, A, B, C, D, bias, z, wt, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--shapes", default=None, help="h,w,G;h,w,G;... (default: a built-in list)")
    ap.add_argument("--segments", default="", help="comma-separated segment counts to time the states kernel at")
    a = ap.parse_args()
    shapes = [tuple(int(x) for x in s.split(",")) for s in a.shapes.split(";")] if a.shapes else SHAPES
    rows = []
    for h, w, G in shapes:
        u, delta, A, B, C, D, bias, z, wt, b = _inputs(h, w, G)
        with torch.no_grad():
            y_loop, _, _ = cross_scan_fwd_cl(u, delta, A, B, C, D, bias, h, w)              # (1, G, L, Di) fp32
            H32 = style_states(u, delta, A, B, bias, h, w, dtype=torch.float32)
            y_st = states_readout_pm(H32, C, u, D).permute(1, 0, 2)                        # (G, L, Di)
            rel32 = ((y_st - y_loop[0]).norm() / y_loop[0].norm()).item()
            del H32, y_st
            outs, ms = {}, {}
            for mode in ("1", "0"):
                os.environ["MAMBAST_STYLE_STATES"] = mode
                fn = lambda: mk.scan_norm_gate(u, delta, A, B, C, D, bias, h, w, z, wt, b, 1e-5)  # noqa: E731
                outs[mode] = fn().float()
                ms[mode] = triton.testing.do_bench(fn, warmup=5, rep=40, return_mode="median")
            rel_bf = ((outs["1"] - outs["0"]).norm() / outs["0"].norm()).item()
            H = style_states(u, delta, A, B, bias, h, w)
            ms_states = triton.testing.do_bench(lambda: style_states(u, delta, A, B, bias, h, w), warmup=3, rep=20,
                                                return_mode="median")
            ms_mm = triton.testing.do_bench(lambda: states_matmul(H, C), warmup=3, rep=20, return_mode="median")
            seg_ms = {}
            if a.segments:
                H1 = style_states(u, delta, A, B, bias, h, w, dtype=torch.float32, segments=1)
                for P in (int(x) for x in a.segments.split(",")):
                    HP = style_states(u, delta, A, B, bias, h, w, dtype=torch.float32, segments=P)
                    rel = ((HP - H1).norm() / H1.norm()).item()
                    del HP
                    t = triton.testing.do_bench(lambda: style_states(u, delta, A, B, bias, h, w, segments=P),
                                                warmup=3, rep=20, return_mode="median")
                    seg_ms[P] = {"ms": round(t, 3), "fp32_rel_vs_one_segment": rel}
                del H1
            H = None
        row = {"h": h, "w": w, "G": G, "fp32_rel": rel32, "bf16_rel_states_vs_loop": rel_bf,
               "ms_states_form": round(ms["1"], 3), "ms_loop_form": round(ms["0"], 3),
               "ms_states_kernel": round(ms_states, 3), "ms_matmul": round(ms_mm, 3),
               "default_segments": states_segments(1, h * w, u.shape[-1]), "states_ms_by_segments": seg_ms}
        rows.append(row)
        print(f"{h}x{w} G{G}: fp32 rel {rel32:.2e}, bf16 rel {rel_bf:.2e}; scan_norm_gate states {ms['1']:.3f} ms "
              f"vs in-loop {ms['0']:.3f} ms ({ms['0'] / ms['1']:.2f}x); states kernel {ms_states:.3f}, matmul "
              f"{ms_mm:.3f} (segments {row['default_segments']}); by segments "
              + ", ".join(f"{P}: {v['ms']:.3f} ({v['fp32_rel_vs_one_segment']:.1e})" for P, v in seg_ms.items()),
              flush=True)
        torch.cuda.empty_cache()
    os.environ.pop("MAMBAST_STYLE_STATES", None)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

"""Compile the Triton kernels for an H100 (sm_90a, or another arch) on any machine, no GPU needed; registers, spills.

What a CPU-only session can check about a GPU kernel before it is ever run: that it compiles for Hopper with this
Triton, how many registers a thread needs (occupancy), and whether anything spills. Uses the ptxas that ships in the
Triton wheel (`ptxas-blackwell`, which accepts the PTX versions recent Triton emits). Timings still need a GPU.
With --sass it also disassembles (nvdisasm, from the same wheel) and counts the instructions that say how a kernel
is bound: MUFU.EX2 (exponentials), SHFL (cross-lane reductions), BAR.SYNC and LDS/STS (shared-memory round trips).

    python scripts/xcompile_kernels.py [--only scan|norm|conv] [--arch 90|80|89] [--sass]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _ptxas() -> str:
    import triton

    d = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    for name in ("ptxas-blackwell", "ptxas"):
        if (d / name).exists():
            return str(d / name)
    raise SystemExit("no ptxas in the Triton wheel")


def _compile(fn, sig: dict, constexprs: dict, num_warps: int, arch: int = 90, sass: bool = False,
             maxnreg: int = 0, dump: str = "") -> str:
    """Registers / spills of one specialisation, as ptxas reports them for sm_<arch> (sm_90a for Hopper)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    for name in constexprs:
        sig[name] = "constexpr"
    # as the launcher specialises on a GPU: pointers 16-byte aligned, integer arguments divisible by 16 unless the
    # kernel says do_not_specialize (session 9: without this the layouts differed from the GPU's: a 2-D load that
    # the GPU build vectorises along the channels changed the whole state tile's layout, shuffles and barriers
    # included, and the SASS read here was not what ran)
    names = list(sig)
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
             if sig[n].startswith("*") or (sig[n] == "i32" and not fn.params[i].do_not_specialize)}
    options = {"num_warps": num_warps, **({"maxnreg": maxnreg} if maxnreg else {})}
    k = triton.compile(ASTSource(fn, sig, constexprs=constexprs, attrs=attrs), target=GPUTarget("cuda", arch, 32),
                       options=options)
    counts = ""
    with tempfile.TemporaryDirectory() as d:
        ptx = os.path.join(d, "k.ptx")
        Path(ptx).write_text(k.asm["ptx"])
        r = subprocess.run([_ptxas(), f"-arch=sm_{arch}{'a' if arch == 90 else ''}", "-v", ptx, "-o", os.path.join(d, "k.cubin")],
                           capture_output=True, text=True)
        if sass and r.returncode == 0:
            code = subprocess.run([str(Path(_ptxas()).parent / "nvdisasm"), "-c", os.path.join(d, "k.cubin")],
                                  capture_output=True, text=True).stdout
            if dump:
                Path(dump).write_text(code)
                Path(dump).with_suffix(".ptx").write_text(k.asm["ptx"])
            ops = [m.group(1) for m in re.finditer(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", code)]
            n = {op: sum(o == op for o in ops) for op in ("MUFU", "SHFL", "BAR", "LDS", "STS")}
            counts = f" | SASS {len(ops)} instr: " + " ".join(f"{op} {c}" for op, c in n.items())
    regs = re.search(r"Used (\d+) registers", r.stderr)
    spill = re.search(r"(\d+) bytes spill stores", r.stderr)
    if r.returncode != 0 or regs is None:
        return f"ptxas failed: {r.stderr.strip()[:200]}"
    return f"{regs.group(1)} registers, {spill.group(1) if spill else '?'} bytes spilled{counts}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="substring of the row names to compile")
    ap.add_argument("--dump", default="", help="with --sass: a folder to write each row's SASS into")
    ap.add_argument("--arch", type=int, default=90, help="compute capability ×10: 90 (H100), 80 (A100), 89 (L4/4090)")
    ap.add_argument("--sass", action="store_true", help="also count MUFU / SHFL / BAR / LDS / STS in the SASS")
    a = ap.parse_args()
    import triton

    from mambast_kernels.cross_scan_v2 import _seq_fwd_kernel
    from mambast_kernels.dwconv_silu import _dwconv_silu_kernel
    from mambast_kernels.residual_norm import _row_norm_kernel

    fwd_sig = lambda: dict(zip(  # noqa: E731
        ["u_ptr", "dl_ptr", "A_ptr", "B_ptr", "C_ptr", "D_ptr", "bias_ptr", "y_ptr", "hck_ptr", "hs_ptr", "sdt_ptr",
         "Di", "L", "H", "W", "G", "n_chunks", "GB", "n_gblk", "seg_len", "n_seg"],
        ["*bf16", "*bf16", "*fp32", "*bf16", "*bf16", "*fp32", "*fp32", "*fp32", "*fp32", "*fp32", "*fp32"] + ["i32"] * 10))
    rows = []
    for BD, nw, seg, save, pf, tn in [(64, 4, 0, False, 1, 0), (64, 4, 0, False, 4, 0), (64, 2, 0, False, 4, 0),
                                      (128, 4, 0, False, 4, 0), (64, 4, 0, True, 4, 0), (64, 2, 1, False, 4, 0),
                                      (64, 2, 2, False, 4, 0), (64, 2, 0, False, 4, 1), (128, 4, 0, False, 4, 1),
                                      (32, 1, 0, False, 4, 1), (64, 2, 0, False, 1, 1), (64, 2, 0, True, 4, 1),
                                      (64, 2, 2, False, 4, 1), (64, 4, 0, False, 4, 1)]:
        rows.append((f"scan fwd BD={BD} warps={nw} SEG={seg} SAVE={int(save)} PF={pf} TN={tn}", _seq_fwd_kernel,
                     fwd_sig(), dict(N=16, BD=BD, BT=8, SAVE=save, SEG=seg, PF=pf, TN=tn), nw))
    from mambast_kernels.cross_scan_v3 import _fwd3_kernel
    fwd3_sig = dict(zip(["u_ptr", "dl_ptr", "A_ptr", "B_ptr", "C_ptr", "D_ptr", "bias_ptr", "y_ptr", "hs_ptr", "sdt_ptr",
                         "Di", "L", "H", "W", "G", "n_gblk", "seg_len", "n_seg"],
                        ["*bf16", "*bf16", "*fp32", "*fp32", "*fp32", "*fp32", "*fp32", "*fp32", "*fp32", "*fp32"]
                        + ["i32"] * 8))
    for BD, nw, GB, seg, cap, emu in [(64, 2, 1, 0, 0, 0), (32, 1, 1, 0, 0, 0), (32, 1, 1, 0, 200, 0), (64, 2, 1, 0, 200, 0),
                                      (64, 2, 2, 0, 200, 0), (64, 2, 8, 0, 0, 0), (32, 1, 1, 1, 200, 0),
                                      (32, 1, 1, 2, 200, 0), (64, 2, 1, 0, 0, 1),
                                      # session 10: caps that spill, and two / four lanes per channel (BD 16 / 8)
                                      (64, 2, 1, 0, 168, 0), (64, 2, 1, 0, 128, 0), (16, 1, 1, 0, 0, 0),
                                      (16, 1, 1, 0, 128, 0), (8, 1, 1, 0, 0, 0)]:
        rows.append((f"scan3 fwd BD={BD} warps={nw} GB={GB} SEG={seg} cap={cap} EMU={emu}", _fwd3_kernel,
                     dict(fwd3_sig), dict(N=16, BD=BD, GB=GB, SEG=seg, FAST=True, EMU=emu), nw, cap))
    from mambast_kernels.cross_scan_v2 import _seq_bwd3_kernel

    bwd_names = ["u_ptr", "dl_ptr", "A_ptr", "B_ptr", "C_ptr", "D_ptr", "bias_ptr", "dy_ptr", "hck_ptr", "scr_ptr",
                 "du_ptr", "ddl_ptr", "dB_ptr", "dC_ptr", "dA_ptr", "dD_ptr", "db_ptr",
                 "Di", "L", "H", "W", "G", "n_chunks", "n_dblk"]
    bwd_types = ["*bf16", "*bf16"] + ["*fp32"] * 15 + ["i32"] * 7
    for BD, pf in [(32, 0), (32, 1), (16, 1)]:
        rows.append((f"scan bwd BD={BD} warps=1 PF={pf}", _seq_bwd3_kernel, dict(zip(bwd_names, bwd_types)),
                     dict(N=16, BD=BD, BT=8, PF=pf), 1))
    from mambast_kernels.style_states import _states_kernel

    st_sig = dict(zip(["u_ptr", "dl_ptr", "A_ptr", "B_ptr", "bias_ptr", "st_ptr", "hs_ptr", "sdt_ptr",
                       "Di", "L", "H", "W", "seg_len", "n_seg"],
                      ["*bf16", "*bf16", "*fp32", "*bf16", "*fp32", "*bf16", "*fp32", "*fp32"] + ["i32"] * 6))
    for seg in (0, 1, 2):     # session 12: one recurrence a channel, then the segments' state and store passes
        rows.append((f"states SEG={seg} BD=32 warps=1", _states_kernel, dict(st_sig),
                     dict(N=16, BD=32, SEG=seg, STORE=seg != 1), 1))
    norm_sig = lambda out: {"x_ptr": "*fp32", "y_ptr": "*bf16", "r_ptr": "*fp32", "s_ptr": "*fp32",  # noqa: E731
                            "w_ptr": "*fp32", "b_ptr": "*fp32", "out_ptr": out, "C": "i32", "eps": "fp32"}
    rows.append(("norm residual C=512", _row_norm_kernel, norm_sig("*fp32"),
                 dict(RESIDUAL=True, SEPARATE_RES=False, BLOCK_C=512), 4))
    rows.append(("norm cast C=512 -> bf16", _row_norm_kernel, norm_sig("*bf16"),
                 dict(RESIDUAL=False, SEPARATE_RES=False, BLOCK_C=512), 4))
    conv_sig = {"x_ptr": "*bf16", "w_ptr": "*fp32", "b_ptr": "*fp32", "out_ptr": "*bf16", "h": "i32", "w": "i32",
                "Di": "i32", "sx_b": "i32", "sx_h": "i32", "sx_w": "i32"}
    rows.append(("conv dwconv+silu 32x64", _dwconv_silu_kernel, conv_sig, dict(BT=32, BD=64), 8))
    print(f"triton {triton.__version__}, sm_{a.arch}, {_ptxas()}")
    for name, fn, sig, consts, nw, *cap in rows:
        if a.only and a.only not in name:
            continue
        dump = ""
        if a.dump:
            Path(a.dump).mkdir(parents=True, exist_ok=True)
            dump = str(Path(a.dump) / (re.sub(r"[^A-Za-z0-9=]+", "_", name).strip("_") + ".sass"))
        cap = cap[0] if cap else 0
        t0 = time.perf_counter()
        res = _compile(fn, dict(sig), dict(consts), nw, a.arch, a.sass, cap, dump)
        print(f"  {name:55} {res} | {time.perf_counter() - t0:.1f} s to compile here", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

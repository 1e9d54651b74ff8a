"""Cross-scan v3: the inference forward (no checkpoints) rewritten for issued instructions per step.

Why (session 9, read from the sm_90a SASS of v2's forward, `scripts/xcompile_kernels.py --sass`): with the (N, BD)
state tile (v2's TN = 1) a step issued ~275 instructions per warp for 16 state elements per thread, where the
recurrence and its readout need ~5 per element. Where the rest went:
  - the grid position of each step, `(q % H) * W + q // H`: an integer division (~30 instructions) per step;
  - B_t and C_t: 32 scalar 16-bit loads per thread and step (Triton does not vectorise a load whose layout holds
    its 16 values as repeats), plus two instructions per value to widen and repack them (~100 instructions);
  - the softplus's log through libdevice's polynomial (~25 instructions) instead of one MUFU.LG2;
  - and the 4-step unrolled loop was 4 basic blocks (a branch per step for "past the end?" and one around the
    readout-group loop), so ptxas could not interleave one step's chain with the next one's.

v3 keeps v2's contract (`cross_scan_v2._launch_fwd_cl`: u (S,L,Di), delta (S,K,L,Di), B (S,K,L,N), C (S,K,L,G,N);
slots (S,G,K,L,Di), readout groups, segments) and changes how a step is issued:
  - positions come from counters: (p, r), r the row within the column for column-major directions, advanced per
    step by an add, a compare and two selects (a row-major direction is the column-major walk of a 1-row grid);
  - B and C arrive in fp32 (the wrapper's transpose copy converts them) and are read as int64 words, two states per
    word: the state tile is kept as two (N/2, BD) halves (even and odd states), so every word's two halves are used
    where they land, with no repacking;
  - the softplus is ex2 + lg2 on the MUFU (`lg2.approx`, inline PTX; the interpreter uses tl.log2);
  - the main loop runs whole groups of 4 steps with no branches (loads 4 steps ahead, clamped inside the sequence),
    and the last 0-3 steps run after it; the readout group size GB is a compile-time constant (a static loop).
Each thread owns one channel (BD = 32 * num_warps) and its N states; per step it issues 2 channel loads, N int64
loads, one softplus, N exponentials, 2N FMAs of state and N of readout, and one store.

Di and L are not specialised on (do_not_specialize): when the launcher knows Di % 16 == 0, Triton vectorises the
channel-contiguous loads (A's (N/2, BD) tiles, u, delta) and that choice changes the whole state tile's layout to
4 channels per thread with the states split over lanes and warps, so every readout needs shuffles, shared memory
and barriers (measured in session 9: the first v3 build ran 1.2-7x slower than v2 that way, and v2's (N, BD) tile
of session 7-8 most likely lost for the same reason; the SASS read on a CPU box had not been specialised).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from . import cross_scan as v1
from .scan_ref import K_DIRECTIONS, segment_start_states

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def _lg2(x, FAST: tl.constexpr):
    if FAST:
        return tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.log2(x)


@triton.jit
def _softplus(x, FAST: tl.constexpr):
    e = tl.exp2(x * 1.4426950408889634)
    sp = _lg2(1.0 + e, FAST) * 0.6931471805599453
    return tl.where(x > 20.0, x, tl.where(x < -15.0, e, sp))


@triton.jit
def _exp2_fma(x):
    # 2^x for x <= 0 without the MUFU (opt-in config element 8, for the odd-state half): x rounded to an integer j by
    # adding 1.5 * 2^23 (the sum's low mantissa bits then hold j), 2^f for the rest f in [-0.5, 0.5] by a degree-5
    # polynomial (relative error 1.9e-7 evaluated in fp32, about MUFU.EX2's), and j added into the exponent field.
    # ~11 instructions on the FMA / ALU pipes in place of one MUFU: worth it only where the MUFU pipe is the bound.
    x = tl.maximum(x, -125.0)
    t = x + 12582912.0
    f = x - (t - 12582912.0)
    p = 0.0013264714507386088 * f + 0.009671513922512531
    p = p * f + 0.05550733953714371
    p = p * f + 0.24022242426872253
    p = p * f + 0.6931470036506653
    p = p * f + 1.0
    j = t.to(tl.int32, bitcast=True) - 0x4B400000
    return (p.to(tl.int32, bitcast=True) + (j << 23)).to(tl.float32, bitcast=True)


@triton.jit
def _exp2_fma_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = o < n
    tl.store(y_ptr + o, _exp2_fma(tl.load(x_ptr + o, mask=m, other=0.0)), mask=m)


def exp2_fma(x: torch.Tensor) -> torch.Tensor:
    """`_exp2_fma` elementwise over an fp32 tensor (its test; x <= 0 is the range the scan uses)."""
    x = x.float().contiguous()
    y = torch.empty_like(x)
    _exp2_fma_kernel[(triton.cdiv(x.numel(), 256),)](x, y, x.numel(), BLOCK=256)
    return y


@triton.jit
def _start(i, L, H, W, rev, col):
    # counters of step i: p its grid index, r its row (column-major walks; 0 for row-major ones)
    q = tl.where(rev, L - 1 - i, i)
    hc = tl.where(col, H, 1)
    r = q % hc
    p = tl.where(col, r * W + q // hc, q)
    return p, r


@triton.jit
def _advance(p, r, sg, hc, W):
    # one step on: down the column (sg = 1) or up it (sg = -1); past its end, to the next (previous) column's top
    # (bottom). A row-major walk is the column-major walk of a 1-row grid (hc = 1): p moves by sg.
    r = r + sg
    wrap = (r == hc) | (r < 0)
    r = tl.where(wrap, r - sg * hc, r)
    p = p + tl.where(wrap, sg * (1 - (hc - 1) * W), sg * W)
    return p, r


@triton.jit
def _lo(w):
    return w.to(tl.uint32).to(tl.float32, bitcast=True)


@triton.jit
def _hi(w):
    return (w >> 32).to(tl.uint32).to(tl.float32, bitcast=True)


@triton.jit
def _loads(p, L, u_base, dl_base, B64, C64, Di, G, g0, offs_d, mask_d, offs_h, NH: tl.constexpr):
    # the loads of the step at grid index p (clamped into the sequence: steps past the end re-read, never used)
    pl = tl.minimum(tl.maximum(p, 0), L - 1)
    u = tl.load(u_base + pl * Di + offs_d, mask=mask_d, other=0.0)
    d = tl.load(dl_base + pl * Di + offs_d, mask=mask_d, other=0.0)
    b = tl.load(B64 + pl * NH + offs_h)
    c = tl.load(C64 + (pl * G + g0) * NH + offs_h)
    return pl, u, d, b, c


@triton.jit
def _step(h0, h1, sdt, pl, u_raw, d_raw, bw, cw, A0, A1, Dv, bias, mask_d, offs_d, offs_h, y_base, C64, stride_yg,
          Di, G, g0, NH: tl.constexpr, GB: tl.constexpr, SEG: tl.constexpr, FAST: tl.constexpr,
          EMU: tl.constexpr):
    u = u_raw.to(tl.float32)
    dt = tl.where(mask_d, _softplus(d_raw.to(tl.float32) + bias, FAST), 0.0)
    dtu = (dt * u)[None, :]
    h0 = tl.exp2(dt[None, :] * A0) * h0 + dtu * _lo(bw)[:, None]
    if EMU:
        a1 = _exp2_fma(dt[None, :] * A1)
    else:
        a1 = tl.exp2(dt[None, :] * A1)
    h1 = a1 * h1 + dtu * _hi(bw)[:, None]
    if SEG == 1:
        sdt += dt
    else:
        du = Dv * u
        for gi in tl.static_range(GB):
            if gi == 0:
                c = cw
            else:
                c = tl.load(C64 + (pl * G + tl.minimum(g0 + gi, G - 1)) * NH + offs_h)
            y = tl.sum(h0 * _lo(c)[:, None], axis=0) + tl.sum(h1 * _hi(c)[:, None], axis=0) + du
            tl.store(y_base + gi * stride_yg + pl * Di + offs_d, y, mask=mask_d & (offs_d * 0 + g0 + gi < G))
    return h0, h1, sdt


@triton.jit(do_not_specialize=["Di", "L", "H", "W", "G", "n_gblk", "seg_len", "n_seg"])
def _fwd3_kernel(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, y_ptr, hs_ptr, sdt_ptr,
                 Di, L, H, W, G, n_gblk, seg_len, n_seg,
                 N: tl.constexpr, BD: tl.constexpr, GB: tl.constexpr, SEG: tl.constexpr, FAST: tl.constexpr,
                 EMU: tl.constexpr = 0):
    # grid (channel blocks, K, S * n_gblk * n_seg). Readouts g0 .. g0+GB-1 of recurrence s (a group past G is
    # masked); segment j of n_seg: SEG 0 whole sequence from zero, 1 state pass (end state and sum of dt, no
    # readouts), 2 output pass from hs[j] (the wrapper combines the state pass's results in order).
    NH: tl.constexpr = N // 2
    pid2 = tl.program_id(2)
    j = pid2 % n_seg
    rest = pid2 // n_seg
    pid_d = tl.program_id(0)
    k = tl.program_id(1)
    s = (rest // n_gblk).to(tl.int64)
    g0 = rest % n_gblk * GB
    i0 = j * seg_len
    i1 = tl.minimum(L, i0 + seg_len)
    offs_d = pid_d * BD + tl.arange(0, BD)
    mask_d = offs_d < Di
    offs_h = tl.arange(0, NH)
    c = k * Di + offs_d
    # A given transposed, (N, K*Di): even states in A0 / h0, odd ones in A1 / h1 (the halves of an int64 word)
    a_off = (2 * offs_h)[:, None] * (4 * Di) + c[None, :]
    A0 = tl.load(A_ptr + a_off, mask=mask_d[None, :], other=0.0).to(tl.float32) * 1.4426950408889634
    A1 = tl.load(A_ptr + a_off + 4 * Di, mask=mask_d[None, :], other=0.0).to(tl.float32) * 1.4426950408889634
    Dv = tl.load(D_ptr + c, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + c, mask=mask_d, other=0.0).to(tl.float32)

    LD = tl.cast(Di, tl.int64) * L
    u_base = u_ptr + s * LD                                              # u: (S, L, Di)
    dl_base = dl_ptr + (s * 4 + k) * LD                                  # delta: (S, K, L, Di)
    B64 = B_ptr.to(tl.pointer_type(tl.int64)) + (s * 4 + k) * L * NH     # B fp32 (S, K, L, N): NH words a step
    C64 = C_ptr.to(tl.pointer_type(tl.int64)) + (s * 4 + k) * L * G * NH  # C fp32 (S, K, L, G, N)
    y_base = y_ptr + ((s * G + g0) * 4 + k) * LD                         # slots (S, G, K, L, Di) from readout g0
    stride_yg = 4 * LD
    hs_base = hs_ptr + ((s * 4 + k) * n_seg + j) * N * Di                # segment states (S, K, n_seg, N, Di)
    hs_off = (2 * offs_h)[:, None] * Di + offs_d[None, :]
    rev = k >= 2
    col = (k % 2) == 1
    sg = tl.where(rev, -1, 1)
    hc = tl.where(col, H, 1)

    if SEG == 2:
        h0 = tl.load(hs_base + hs_off, mask=mask_d[None, :], other=0.0)
        h1 = tl.load(hs_base + hs_off + Di, mask=mask_d[None, :], other=0.0)
    else:
        h0 = tl.zeros((NH, BD), dtype=tl.float32)
        h1 = tl.zeros((NH, BD), dtype=tl.float32)
    sdt = tl.zeros((BD,), dtype=tl.float32)

    # four register slots: slot a holds step i's loads, b step i + 1's, ... refilled 4 steps ahead once read
    p, r = _start(i0, L, H, W, rev, col)
    pa, ua, da, ba, ca = _loads(p, L, u_base, dl_base, B64, C64, Di, G, g0, offs_d, mask_d, offs_h, NH)
    p, r = _advance(p, r, sg, hc, W)
    pb, ub, db, bb, cb = _loads(p, L, u_base, dl_base, B64, C64, Di, G, g0, offs_d, mask_d, offs_h, NH)
    p, r = _advance(p, r, sg, hc, W)
    pc, uc, dc, bc, cc = _loads(p, L, u_base, dl_base, B64, C64, Di, G, g0, offs_d, mask_d, offs_h, NH)
    p, r = _advance(p, r, sg, hc, W)
    pd, ud, dd, bd, cd = _loads(p, L, u_base, dl_base, B64, C64, Di, G, g0, offs_d, mask_d, offs_h, NH)
    p, r = _advance(p, r, sg, hc, W)
    n_main = (i1 - i0) // 4
    for _ in range(n_main):
        p0, u0, d0, b0, c0 = pa, ua, da, ba, ca
        pa, ua, da, ba, ca = _loads(p, L, u_base, dl_base, B64, C64, Di, G, g0, offs_d, mask_d, offs_h, NH)
        p, r = _advance(p, r, sg, hc, W)
        h0, h1, sdt = _step(h0, h1, sdt, p0, u0, d0, b0, c0, A0, A1, Dv, bias, mask_d, offs_d, offs_h, y_base, C64,
                            stride_yg, Di, G, g0, NH, GB, SEG, FAST, EMU)
        p0, u0, d0, b0, c0 = pb, ub, db, bb, cb
        pb, ub, db, bb, cb = _loads(p, L, u_base, dl_base, B64, C64, Di, G, g0, offs_d, mask_d, offs_h, NH)
        p, r = _advance(p, r, sg, hc, W)
        h0, h1, sdt = _step(h0, h1, sdt, p0, u0, d0, b0, c0, A0, A1, Dv, bias, mask_d, offs_d, offs_h, y_base, C64,
                            stride_yg, Di, G, g0, NH, GB, SEG, FAST, EMU)
        p0, u0, d0, b0, c0 = pc, uc, dc, bc, cc
        pc, uc, dc, bc, cc = _loads(p, L, u_base, dl_base, B64, C64, Di, G, g0, offs_d, mask_d, offs_h, NH)
        p, r = _advance(p, r, sg, hc, W)
        h0, h1, sdt = _step(h0, h1, sdt, p0, u0, d0, b0, c0, A0, A1, Dv, bias, mask_d, offs_d, offs_h, y_base, C64,
                            stride_yg, Di, G, g0, NH, GB, SEG, FAST, EMU)
        p0, u0, d0, b0, c0 = pd, ud, dd, bd, cd
        pd, ud, dd, bd, cd = _loads(p, L, u_base, dl_base, B64, C64, Di, G, g0, offs_d, mask_d, offs_h, NH)
        p, r = _advance(p, r, sg, hc, W)
        h0, h1, sdt = _step(h0, h1, sdt, p0, u0, d0, b0, c0, A0, A1, Dv, bias, mask_d, offs_d, offs_h, y_base, C64,
                            stride_yg, Di, G, g0, NH, GB, SEG, FAST, EMU)
    # the last (i1 - i0) % 4 steps are in slots a, b, c
    rem = (i1 - i0) % 4
    if rem > 0:
        h0, h1, sdt = _step(h0, h1, sdt, pa, ua, da, ba, ca, A0, A1, Dv, bias, mask_d, offs_d, offs_h, y_base, C64,
                            stride_yg, Di, G, g0, NH, GB, SEG, FAST, EMU)
    if rem > 1:
        h0, h1, sdt = _step(h0, h1, sdt, pb, ub, db, bb, cb, A0, A1, Dv, bias, mask_d, offs_d, offs_h, y_base, C64,
                            stride_yg, Di, G, g0, NH, GB, SEG, FAST, EMU)
    if rem > 2:
        h0, h1, sdt = _step(h0, h1, sdt, pc, uc, dc, bc, cc, A0, A1, Dv, bias, mask_d, offs_d, offs_h, y_base, C64,
                            stride_yg, Di, G, g0, NH, GB, SEG, FAST, EMU)
    if SEG == 1:
        tl.store(hs_base + hs_off, h0, mask=mask_d[None, :])
        tl.store(hs_base + hs_off + Di, h1, mask=mask_d[None, :])
        tl.store(sdt_ptr + ((s * 4 + k) * n_seg + j) * Di + offs_d, sdt, mask=mask_d)


# (BD, num_warps, GB readouts per program (0: all G, up to 16), P segments (0/1: none), 4 (loads ahead), 2 (= v3)
# [, register cap (0: none)[, 1: half the exponentials on the FMA pipe]]): BD = 32 * num_warps, one channel per
# thread. The last element is a measured dead end, kept so that `kernels/bench.py`'s "v3 … emu" rows reproduce it:
# session 9 guessed the MUFU pipe bounded the loop (v2 and v3 issue the same 18 MUFU per warp and step and ran at
# nearly the same speed at batch 64 despite 226 vs 146 instructions); session 10 measured the FMA-pipe exponentials
# 0.87x as fast at every shape (H200; Nsight Compute: XU pipe 47 % busy, stalls mostly on loads), so it is not a
# tuner candidate. The 5th and 6th elements mark the tuple as v3's in v2's config space
# (`cross_scan_v2._launch_fwd_cl` dispatches on the 6th). ptxas takes 250+ registers where 200 suffice without spilling (`scripts/xcompile_kernels.py --only scan3`): the cap fits 10 warps per SM instead of 8.
# The tuner offers GB 0 (all readouts in one program) for one readout only: the extra readouts' C rows are loaded
# when used, not ahead, so each step waits for them (H100, 512², G = 8 in one program: 14.1 ms against 1.39 with
# one program per readout), and the unrolled readouts compile slowly (21 s for G = 8 with Triton 3.6).
FWD3_CONFIGS = [(32, 1, 0, 0, 4, 2, 200), (64, 2, 0, 0, 4, 2, 200), (32, 1, 0, 0, 4, 2), (64, 2, 0, 0, 4, 2)]
FWD3_G_CONFIGS = [(32, 1, 1, 0, 4, 2, 200), (64, 2, 1, 0, 4, 2, 200), (32, 1, 2, 0, 4, 2, 200),
                  (64, 2, 2, 0, 4, 2, 200)]
FWD3_SEG_CONFIGS = [(32, 1, 0, 16, 4, 2, 200), (64, 2, 0, 16, 4, 2, 200), (32, 1, 0, 64, 4, 2, 200)]
GB_MAX = 16            # readouts per program are unrolled: all G only up to this many


def allowed() -> bool:
    """Whether the tuner may pick v3's configs (env MAMBAST_SCAN3=0: not; for A/B runs and as a way out)."""
    return os.environ.get("MAMBAST_SCAN3", "1") != "0"


def launch(u, delta, A, Bt, Ct, D, delta_bias, h, w, cfg, slot_dtype=torch.float32):
    """v3 forward, no checkpoints. u (S,L,Di), delta (S,K,L,Di), Bt (S,K,L,N), Ct (S,K,L,G,N) contiguous (B and C in
    fp32: converted here when they are not). -> slots (S,G,K,L,Di) in slot_dtype."""
    S, L, Di = u.shape
    G, N = Ct.shape[3], A.shape[1]
    assert N % 2 == 0 and N & (N - 1) == 0, N
    BD, nw = cfg[:2]
    GB = min(G, cfg[2]) if len(cfg) > 2 and cfg[2] else G
    assert GB <= GB_MAX, f"{GB} readouts per program: at most {GB_MAX} (give GB in the config)"
    P = cfg[3] if len(cfg) > 3 and cfg[3] else 1
    extra = {"maxnreg": cfg[6]} if len(cfg) > 6 and cfg[6] else {}
    emu = cfg[7] if len(cfg) > 7 else 0             # 1: the odd states' exponentials on the FMA pipe (_exp2_fma)
    Bt = Bt if Bt.dtype == torch.float32 else Bt.float()
    Ct = Ct if Ct.dtype == torch.float32 else Ct.float()
    K = K_DIRECTIONS
    fast = not v1._interpreting() and torch.version.hip is None     # lg2.approx is PTX: NVIDIA GPUs only
    n_gblk = triton.cdiv(G, GB)
    slots = v1._empty((S, G, K, L, Di), u.device, slot_dtype)
    n_dblk = triton.cdiv(Di, BD)
    seg_len = triton.cdiv(L, max(1, P))
    n_seg = triton.cdiv(L, seg_len)
    At = A.t().contiguous()
    if n_seg == 1:
        _fwd3_kernel[(n_dblk, K, S * n_gblk)](
            u, delta, At, Bt, Ct, D, delta_bias, slots, slots, slots, Di, L, h, w, G, n_gblk, L, 1,
            N=N, BD=BD, GB=GB, SEG=0, FAST=fast, EMU=emu, num_warps=nw, **extra)
        return slots
    hs = v1._empty((S, K, n_seg, N, Di), u.device)
    sdt = v1._empty((S, K, n_seg, Di), u.device)
    _fwd3_kernel[(n_dblk, K, S * n_seg)](
        u, delta, At, Bt, Ct, D, delta_bias, slots, hs, sdt, Di, L, h, w, G, 1, seg_len, n_seg,
        N=N, BD=BD, GB=1, SEG=1, FAST=fast, EMU=emu, num_warps=nw, **extra)
    h0 = segment_start_states(A, hs, sdt)
    _fwd3_kernel[(n_dblk, K, S * n_gblk * n_seg)](
        u, delta, At, Bt, Ct, D, delta_bias, slots, h0, sdt, Di, L, h, w, G, n_gblk, seg_len, n_seg,
        N=N, BD=BD, GB=GB, SEG=2, FAST=fast, EMU=emu, num_warps=nw, **extra)
    return slots

"""Cross-scan v2: sequential-in-t forward on channel-last data (same contract as `scan_ref.cross_scan_ref`).

Why (see SCAN_NOTES.md): v1 reads u / delta in (S, Di, L) with lanes across channels, so every warp load touches one
sector per channel (stride L), and the column-major directions (k = 1, 3) come back to the same sector only h steps
later: L2 thrash, which is why v1's time grows superlinearly with L (512^2 -> 1024^2: 5.4x for 4x L). Instruction count
was not the limit.

v2 forward: one program per (channel block of BD, direction k, recurrence s) keeps a (BD, N) fp32 state tile in
registers and walks its direction one step at a time (mamba_ssm's shape of work). Each step loads BD contiguous
channels of u and delta (channel-last, coalesced for every direction), N values of B_t and C_t (broadcast), and does per
element: one exp2 (A pre-scaled by log2 e), one FMUL, one FFMA for the state, one FFMA for the readout. Loads for step
t+1 are issued before step t's arithmetic (register double-buffer), so their latency hides behind one step of work.
No associative scan, no shuffles along t, small register footprint (state = N*BD/threads registers per thread).

Each direction writes its own (L, Di) slot of a (S, G, K, L, Di) fp32 buffer; the slots are summed in a fixed order
(deterministic), by torch or by the fused epilogue (merge_norm.py). Two forms widen the parallelism where the plain
one leaves the GPU idle: readout groups (the decoder's G contents on one recurrence, GB per program) and segments
(long sequences cut into P parts: state pass, ordered combine, output pass). The tuner picks per shape.

Backward: with `save_states` the forward stores the state at the start of every BT-step chunk (S, K, n_chunks, N, Di).
The default backward (`_seq_bwd3_kernel`, below) is sequential too: per chunk it recomputes the states from the
checkpoint, then runs the adjoint recurrence backwards; MAMBAST_SCAN_BWD=v1 uses v1's chunked kernel instead (in its
channel-last mode, CL=True), which reads the same checkpoints.

Layouts: layout="cf" (default, the v1 contract: u (S,Di,L), delta (S,K,Di,L), y (S,G,Di,L)) transposes u / delta to
channel-last in the wrapper (one copy), and y back. layout="cl": u (S,L,Di), delta (S,K,L,Di), returns y (S,G,L,Di),
no copies of the big tensors. B (S,K,N,L) and C (S,G,K,N,L) are the same in both layouts (small).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from . import cross_scan as v1
from . import cross_scan_v3 as v3
from .scan_ref import K_DIRECTIONS, segment_start_states

LOG2E = 1.4426950408889634


@triton.jit
def _softplus(x):
    e = tl.exp(x)
    return tl.where(x > 20.0, x, tl.where(x < -15.0, e, tl.log(1.0 + e)))


@triton.jit
def _pos(i, L, H, W, rev, col):
    # step i of the direction -> grid index (scalar)
    q = tl.where(rev, L - 1 - i, i)
    return tl.where(col, (q % H) * W + q // H, q)


@triton.jit
def _step_loads(i, L, H, W, rev, col, u_base, dl_base, B_base, C_base, Di, G, g0, offs_d, mask_d, offs_n,
                N: tl.constexpr):
    # the loads of step i (clamped to the last step: past the end they are harmless re-reads, never used):
    # its grid position, u and delta (BD channels), B_t and the first readout's C_t (N states)
    p = _pos(tl.minimum(i, L - 1), L, H, W, rev, col)
    u = tl.load(u_base + p * Di + offs_d, mask=mask_d, other=0.0)
    d = tl.load(dl_base + p * Di + offs_d, mask=mask_d, other=0.0)
    Bt = tl.load(B_base + p * N + offs_n)
    Ct = tl.load(C_base + (p * G + g0) * N + offs_n)
    return p, u, d, Bt, Ct


@triton.jit
def _fwd_step(h, sdt, u_raw, d_raw, B_raw, C_raw, pc, i, A2, Dv, bias, mask_d, offs_d, offs_n, y_base, C_base,
              hck_base, hck_off, stride_yg, Di, G, g0, g1, N: tl.constexpr, BT: tl.constexpr, SAVE: tl.constexpr,
              SEG: tl.constexpr, TN: tl.constexpr):
    # one step i (grid position pc) of a direction: checkpoint, state update, readouts; returns (h, sdt).
    # TN = 0: the state tile h is (BD, N); TN = 1: (N, BD) (see _seq_fwd_kernel)
    u = u_raw.to(tl.float32)
    dr = d_raw.to(tl.float32) + bias
    Bt = B_raw.to(tl.float32)
    C0 = C_raw.to(tl.float32)
    if SAVE:
        if i % BT == 0:
            tl.store(hck_base + (i // BT) * N * Di + hck_off, h, mask=_tile_mask(mask_d, TN))
    dt = tl.where(mask_d, _softplus(dr), 0.0)
    if TN:
        a = tl.exp2(dt[None, :] * A2)
        h = a * h + (dt * u)[None, :] * Bt[:, None]
    else:
        a = tl.exp2(dt[:, None] * A2)
        h = a * h + (dt * u)[:, None] * Bt[None, :]
    if SEG == 1:
        sdt += dt
    else:
        du = Dv * u
        y = _readout(h, C0, TN) + du
        tl.store(y_base + pc * Di + offs_d, y, mask=mask_d)
        for g in range(g0 + 1, g1):
            Cg = tl.load(C_base + (pc * G + g) * N + offs_n).to(tl.float32)   # the group's rows share C0's lines
            yg = _readout(h, Cg, TN) + du
            tl.store(y_base + (g - g0) * stride_yg + pc * Di + offs_d, yg, mask=mask_d)
    return h, sdt


@triton.jit
def _readout(h, C, TN: tl.constexpr):
    # sum over the N states of h * C: per channel, (BD,)
    if TN:
        return tl.sum(h * C[:, None], axis=0)
    else:
        return tl.sum(h * C[None, :], axis=1)


@triton.jit
def _tile_mask(mask_d, TN: tl.constexpr):
    # the channel mask broadcast over the state tile's shape
    if TN:
        return mask_d[None, :]
    else:
        return mask_d[:, None]


@triton.jit(do_not_specialize=["H", "W", "G", "n_chunks", "GB", "n_gblk", "seg_len", "n_seg"])
def _seq_fwd_kernel(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, y_ptr, hck_ptr, hs_ptr, sdt_ptr,
                    Di, L, H, W, G, n_chunks, GB, n_gblk, seg_len, n_seg,
                    N: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr, SAVE: tl.constexpr, SEG: tl.constexpr,
                    PF: tl.constexpr, TN: tl.constexpr = 0):
    # Readouts g0 .. g1-1 of recurrence s: a program owns a group of GB of the G contents that share the recurrence
    # (decoder form); the recurrence is recomputed once per group, so groups trade work for parallelism.
    # Segments (long sequences, few recurrences): program j walks steps [j*seg_len, (j+1)*seg_len) of its direction.
    #   SEG = 0: one segment, the whole sequence from a zero state (the ordinary form).
    #   SEG = 1: state pass: from a zero state, store the segment's end state and its sum of dt (no readouts).
    #   SEG = 2: output pass: start from hs[j], the true state before the segment (combined by the wrapper).
    # PF: how many steps ahead the loads are issued. PF = 1: the next step's, before this step's arithmetic. PF = 4:
    #   the loop is unrolled by 4 and each of the 4 register slots is refilled with the step 4 later as soon as it
    #   has been read, so a load has 4 steps of work to arrive (one step is far shorter than a DRAM round trip).
    # TN: orientation of the (fp32) state tile. TN = 0: (BD, N); Triton then spreads N over 16 lanes, and every
    #   step's readout (a sum over N) costs 4 shuffle rounds per channel (sm_90a SASS: 512 SHFL in the PF = 4 loop).
    #   TN = 1: (N, BD), A given transposed (N, K*Di) so that every access runs along the channels; with
    #   BD = 32 * num_warps each thread then holds one channel's N states and the sum stays in its registers (no
    #   SHFL, BAR or shared memory), at twice the registers (238 vs 122 at (64, 2), PF = 4). Session 7, not yet timed.
    pid2 = tl.program_id(2)
    j = pid2 % n_seg
    rest = pid2 // n_seg
    pid_d = tl.program_id(0)
    k = tl.program_id(1)
    s = (rest // n_gblk).to(tl.int64)
    g0 = rest % n_gblk * GB
    g1 = tl.minimum(G, g0 + GB)
    i0 = j * seg_len
    i1 = tl.minimum(L, i0 + seg_len)
    offs_d = pid_d * BD + tl.arange(0, BD)
    mask_d = offs_d < Di
    offs_n = tl.arange(0, N)
    c = k * Di + offs_d
    if TN:
        A2 = tl.load(A_ptr + offs_n[:, None] * (4 * Di) + c[None, :], mask=mask_d[None, :], other=0.0)
    else:
        A2 = tl.load(A_ptr + c[:, None] * N + offs_n[None, :], mask=mask_d[:, None], other=0.0)
    A2 = A2.to(tl.float32) * 1.4426950408889634
    Dv = tl.load(D_ptr + c, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + c, mask=mask_d, other=0.0).to(tl.float32)

    LD = tl.cast(Di, tl.int64) * L
    u_base = u_ptr + s * LD                                   # u: (S, L, Di)
    dl_base = dl_ptr + (s * 4 + k) * LD                       # delta: (S, K, L, Di)
    B_base = B_ptr + (s * 4 + k) * N * L                      # B: (S, K, L, N)  (wrapper transposes; tiny)
    C_base = C_ptr + (s * 4 + k) * L * G * N                  # C: (S, K, L, G, N): a step's G rows are adjacent
    y_base = y_ptr + ((s * G + g0) * 4 + k) * LD              # slots: (S, G, K, L, Di), from readout g0
    hck_base = hck_ptr + (s * 4 + k) * n_chunks * N * Di      # checkpoints: (S, K, n_chunks, N, Di)
    if TN:
        hck_off = offs_n[:, None] * Di + offs_d[None, :]      # (N, BD)
    else:
        hck_off = offs_n[None, :] * Di + offs_d[:, None]      # (BD, N)
    hs_base = hs_ptr + ((s * 4 + k) * n_seg + j) * N * Di     # segment states: (S, K, n_seg, N, Di)
    stride_yg = 4 * LD
    rev = k >= 2
    col = (k % 2) == 1

    if SEG == 2:
        h = tl.load(hs_base + hck_off, mask=_tile_mask(mask_d, TN), other=0.0)
    elif TN:
        h = tl.zeros((N, BD), dtype=tl.float32)
    else:
        h = tl.zeros((BD, N), dtype=tl.float32)
    sdt = tl.zeros((BD,), dtype=tl.float32)
    if PF == 1:
        p, u_n, d_n, B_n, C_n = _step_loads(i0, L, H, W, rev, col, u_base, dl_base, B_base, C_base, Di, G, g0,
                                            offs_d, mask_d, offs_n, N)
        for i in range(i0, i1):
            pc, u, dr, Bt, C0 = p, u_n, d_n, B_n, C_n
            # issue the next step's loads before this step's arithmetic
            p, u_n, d_n, B_n, C_n = _step_loads(i + 1, L, H, W, rev, col, u_base, dl_base, B_base, C_base, Di, G,
                                                g0, offs_d, mask_d, offs_n, N)
            h, sdt = _fwd_step(h, sdt, u, dr, Bt, C0, pc, i, A2, Dv, bias, mask_d, offs_d, offs_n, y_base, C_base,
                               hck_base, hck_off, stride_yg, Di, G, g0, g1, N, BT, SAVE, SEG, TN)
    else:
        tl.static_assert(PF == 4, "prefetch depth PF must be 1 or 4")
        # slot q holds the loads of step i + q; each slot is refilled with the step 4 later right after it is read
        p0, u0, d0, B0, C0 = _step_loads(i0, L, H, W, rev, col, u_base, dl_base, B_base, C_base, Di, G, g0,
                                         offs_d, mask_d, offs_n, N)
        p1, u1, d1, B1, C1 = _step_loads(i0 + 1, L, H, W, rev, col, u_base, dl_base, B_base, C_base, Di, G, g0,
                                         offs_d, mask_d, offs_n, N)
        p2, u2, d2, B2, C2 = _step_loads(i0 + 2, L, H, W, rev, col, u_base, dl_base, B_base, C_base, Di, G, g0,
                                         offs_d, mask_d, offs_n, N)
        p3, u3, d3, B3, C3 = _step_loads(i0 + 3, L, H, W, rev, col, u_base, dl_base, B_base, C_base, Di, G, g0,
                                         offs_d, mask_d, offs_n, N)
        for i in range(i0, i1, 4):
            # step i is always inside the segment; steps i + 1 .. i + 3 are skipped past its end
            pc, u, dr, Bt, Cr = p0, u0, d0, B0, C0
            p0, u0, d0, B0, C0 = _step_loads(i + 4, L, H, W, rev, col, u_base, dl_base, B_base, C_base, Di, G, g0,
                                             offs_d, mask_d, offs_n, N)
            h, sdt = _fwd_step(h, sdt, u, dr, Bt, Cr, pc, i, A2, Dv, bias, mask_d, offs_d, offs_n, y_base, C_base,
                               hck_base, hck_off, stride_yg, Di, G, g0, g1, N, BT, SAVE, SEG, TN)
            pc, u, dr, Bt, Cr = p1, u1, d1, B1, C1
            p1, u1, d1, B1, C1 = _step_loads(i + 5, L, H, W, rev, col, u_base, dl_base, B_base, C_base, Di, G, g0,
                                             offs_d, mask_d, offs_n, N)
            if i + 1 < i1:
                h, sdt = _fwd_step(h, sdt, u, dr, Bt, Cr, pc, i + 1, A2, Dv, bias, mask_d, offs_d, offs_n, y_base,
                                   C_base, hck_base, hck_off, stride_yg, Di, G, g0, g1, N, BT, SAVE, SEG, TN)
            pc, u, dr, Bt, Cr = p2, u2, d2, B2, C2
            p2, u2, d2, B2, C2 = _step_loads(i + 6, L, H, W, rev, col, u_base, dl_base, B_base, C_base, Di, G, g0,
                                             offs_d, mask_d, offs_n, N)
            if i + 2 < i1:
                h, sdt = _fwd_step(h, sdt, u, dr, Bt, Cr, pc, i + 2, A2, Dv, bias, mask_d, offs_d, offs_n, y_base,
                                   C_base, hck_base, hck_off, stride_yg, Di, G, g0, g1, N, BT, SAVE, SEG, TN)
            pc, u, dr, Bt, Cr = p3, u3, d3, B3, C3
            p3, u3, d3, B3, C3 = _step_loads(i + 7, L, H, W, rev, col, u_base, dl_base, B_base, C_base, Di, G, g0,
                                             offs_d, mask_d, offs_n, N)
            if i + 3 < i1:
                h, sdt = _fwd_step(h, sdt, u, dr, Bt, Cr, pc, i + 3, A2, Dv, bias, mask_d, offs_d, offs_n, y_base,
                                   C_base, hck_base, hck_off, stride_yg, Di, G, g0, g1, N, BT, SAVE, SEG, TN)
    if SEG == 1:
        tl.store(hs_base + hck_off, h, mask=_tile_mask(mask_d, TN))
        tl.store(sdt_ptr + ((s * 4 + k) * n_seg + j) * Di + offs_d, sdt, mask=mask_d)


# (BD channels per program, num_warps[, GB readouts per program]); GB only matters when G > 1 (decoder form).
FWD_CONFIGS = [(64, 4), (128, 4), (32, 2), (64, 2), (128, 8)]
# The same with loads issued 4 steps ahead (PF = 4, the 5th element; GB 0 = all readouts, P 0 = no segments). Session
# 5 reading of the H100 numbers: the plain form takes ~0.66 µs per step at 512² whether 1 or 8 recurrences run
# (2.20 vs 2.72 ms for 4,096 steps), about one DRAM round trip, so each step waits for the loads issued one step
# before. Not yet timed on a GPU: the tuner picks them only where they measure faster.
FWD_PF_CONFIGS = [(64, 4, 0, 0, 4), (64, 2, 0, 0, 4), (128, 4, 0, 0, 4), (32, 2, 0, 0, 4)]
# GB = 1 recomputes the recurrence for every readout: the work of separate recurrences, but without copying the style
# tensors per content (measured on an H100, 512², G=8: 8 recurrences 2.69 ms, GB=2 3.37, GB=8 11.2).
FWD_G_CONFIGS = [(64, 4, 4), (64, 4, 8), (32, 2, 4), (32, 2, 8), (64, 2, 8), (64, 4, 16), (32, 2, 16), (64, 4, 2),
                 (64, 2, 2), (64, 2, 1), (128, 4, 1), (32, 2, 1), (64, 4, 4, 0, 4), (64, 2, 8, 0, 4), (64, 2, 1, 0, 4)]
# (BD, num_warps, GB (0 = all), P segments): the segmented form, tried for long sequences (L >= 1024) only.
# Two (BD, warps) shapes only, so a new sequence length compiles at most four extra kernel variants (SEG 1 and 2).
FWD_SEG_CONFIGS = [(64, 2, 0, 4), (64, 2, 0, 16), (64, 2, 0, 64), (64, 4, 0, 32), (64, 4, 2, 8), (64, 2, 1, 8),
                   (64, 2, 0, 16, 4), (64, 4, 0, 32, 4)]
# The same with the (N, BD) state tile (TN = 1, the 6th element; session 7): only shapes with BD = 32 * num_warps,
# where each thread holds one channel's N states (other shapes split N over warps: barriers). Not yet timed.
# PF = 4 needs 238 registers with TN = 1 (4 programs of 2 warps per SM); capped at 168 it spills 36 bytes and 6 fit.
FWD_TN_CONFIGS = [(64, 2, 0, 0, 4, 1), (128, 4, 0, 0, 4, 1), (32, 1, 0, 0, 4, 1), (64, 2, 0, 0, 1, 1),
                  (64, 2, 0, 0, 4, 1, 168), (128, 4, 0, 0, 4, 1, 168)]
# Readouts are cheap with TN = 1 (a register sum instead of 4 shuffle rounds each), so larger groups are tried too.
FWD_TN_G_CONFIGS = [(64, 2, 0, 0, 4, 1), (64, 2, 16, 0, 4, 1), (64, 2, 8, 0, 4, 1), (64, 2, 2, 0, 4, 1),
                    (64, 2, 1, 0, 4, 1), (128, 4, 0, 0, 4, 1), (64, 2, 4, 0, 1, 1)]
FWD_TN_SEG_CONFIGS = [(64, 2, 0, 16, 4, 1), (64, 2, 0, 64, 4, 1), (64, 2, 1, 8, 4, 1)]
SEG_MIN_L = 1024       # 256² images (L = 1024) run at B = 1 / one recurrence many readouts: latency-bound without segments
_DEFAULT_FWD = (64, 4)
TRAIN_BT = 8            # checkpoint interval = v1 backward's chunk
BWD_CONFIGS = v1.BWD_CONFIGS
_DEFAULT_BWD = v1._DEFAULT_BWD


def _launch_fwd_cl(u, delta, A, Bt, Ct, D, delta_bias, h, w, cfg, save, BT=TRAIN_BT, slot_dtype=torch.float32):
    """u (S,L,Di), delta (S,K,L,Di), Bt (S,K,L,N), Ct (S,K,L,G,N), all contiguous. -> slots (S,G,K,L,Di) in
    slot_dtype (the fp32 outputs rounded once when stored), hck.

    cfg = (BD, num_warps[, GB readouts per program (0: all)[, P segments (0 or 1: none)[, PF prefetch depth, 1 or
    4[, TN state tile (N, BD) instead of (BD, N)[, register cap (0: none)]]]]]). With P > 1 the sequence is cut into
    P segments
    scanned in parallel: a state pass gives each segment's end state (from zero) and sum of dt, the true state before
    segment j is H_j = exp(A * sum dt_{j-1}) * H_{j-1} + h_{j-1} (a short loop here, fixed order), and an output pass
    rescans every segment from its H_j. Twice the recurrence work for P times the parallelism: for long sequences
    with few recurrences (one 4K image, video frames), where the plain form leaves most of the GPU idle."""
    if len(cfg) > 5 and cfg[5] == 2:                                   # v3's forward (cross_scan_v3.py)
        assert not save, "v3's forward stores no checkpoints"
        return v3.launch(u, delta, A, Bt, Ct, D, delta_bias, h, w, cfg, slot_dtype), None
    S, L, Di = u.shape
    G, N = Ct.shape[3], A.shape[1]
    BD, nw = cfg[:2]
    GB = min(G, cfg[2]) if len(cfg) > 2 and cfg[2] else G
    P = cfg[3] if len(cfg) > 3 and cfg[3] else 1
    PF = cfg[4] if len(cfg) > 4 else 1
    TN = cfg[5] if len(cfg) > 5 else 0
    extra = {"maxnreg": cfg[6]} if len(cfg) > 6 and cfg[6] else {}     # a register cap (more programs per SM)
    n_gblk = triton.cdiv(G, GB)
    assert not (save and n_gblk > 1), "checkpoints are saved for one readout group only"
    assert not (save and P > 1), "checkpoints are saved by the one-segment form only"
    n_chunks = triton.cdiv(L, BT)
    K = K_DIRECTIONS
    slots = v1._empty((S, G, K, L, Di), u.device, slot_dtype)
    hck = v1._empty((S, K, n_chunks, N, Di), u.device) if save else slots
    n_dblk = triton.cdiv(Di, BD)
    seg_len = triton.cdiv(L, max(1, P))
    n_seg = triton.cdiv(L, seg_len)
    Ak = A.t().contiguous() if TN else A     # TN = 1 reads A as (N, K*Di), along the channels
    if n_seg == 1:
        _seq_fwd_kernel[(n_dblk, K, S * n_gblk)](
            u, delta, Ak, Bt, Ct, D, delta_bias, slots, hck, slots, slots, Di, L, h, w, G, n_chunks, GB, n_gblk,
            L, 1, N=N, BD=BD, BT=BT, SAVE=save, SEG=0, PF=PF, TN=TN, num_warps=nw, **extra)
        return slots, (hck if save else None)
    hs = v1._empty((S, K, n_seg, N, Di), u.device)
    sdt = v1._empty((S, K, n_seg, Di), u.device)
    _seq_fwd_kernel[(n_dblk, K, S * n_seg)](
        u, delta, Ak, Bt, Ct, D, delta_bias, slots, slots, hs, sdt, Di, L, h, w, G, n_chunks, G, 1,
        seg_len, n_seg, N=N, BD=BD, BT=BT, SAVE=False, SEG=1, PF=PF, TN=TN, num_warps=nw, **extra)
    h0 = segment_start_states(A, hs, sdt)
    _seq_fwd_kernel[(n_dblk, K, S * n_gblk * n_seg)](
        u, delta, Ak, Bt, Ct, D, delta_bias, slots, slots, h0, sdt, Di, L, h, w, G, n_chunks, GB, n_gblk,
        seg_len, n_seg, N=N, BD=BD, BT=BT, SAVE=False, SEG=2, PF=PF, TN=TN, num_warps=nw, **extra)
    return slots, None


def _to_cl(u, delta):
    return u.transpose(1, 2).contiguous(), delta.transpose(2, 3).contiguous()


def _check(u_cl, delta_cl, A, B, C, D, delta_bias, h, w):
    S, L, Di = u_cl.shape
    N = A.shape[1]
    G = C.shape[1]
    assert L == h * w, f"L={L} does not match grid {h}x{w}"
    assert delta_cl.shape == (S, K_DIRECTIONS, L, Di), delta_cl.shape
    assert A.shape == (K_DIRECTIONS * Di, N) and B.shape == (S, K_DIRECTIONS, N, L), (A.shape, B.shape)
    assert C.shape == (S, G, K_DIRECTIONS, N, L), C.shape
    assert D.shape == (K_DIRECTIONS * Di,) and delta_bias.shape == (K_DIRECTIONS * Di,)
    assert N & (N - 1) == 0
    return S, L, Di, G, N


def prefetch4_allowed() -> bool:
    """Whether the tuner may pick the PF = 4 configs (env MAMBAST_SCAN2_PF=0: not; for A/B runs and as a way out)."""
    return os.environ.get("MAMBAST_SCAN2_PF", "1") != "0"


def slot_dtype_for(out_dtype: torch.dtype) -> torch.dtype:
    """The dtype of the direction slots an inference forward writes for the fused epilogue: bf16 when the result is
    bf16, else fp32; env MAMBAST_SCAN_SLOTS=fp32 keeps them fp32. The epilogue sums the 4 slots in fp32. Default since
    session 11 (H200, same call, alternating: 1080p video 66.4 / 66.6 vs 64.4 / 64.4 fps; 512² batch 64 535 vs 524
    img/s; 1024² 141 vs 135; BENCHMARKS.md): the epilogue is memory-bound and bf16 halves what it reads."""
    if out_dtype == torch.bfloat16 and os.environ.get("MAMBAST_SCAN_SLOTS", "bf16") == "bf16":
        return torch.bfloat16
    return torch.float32


def tile_tn_allowed() -> bool:
    """Whether the tuner may pick the (N, BD) state-tile configs: only with env MAMBAST_SCAN2_TN=1. Measured on an H100
    in session 8 they lost at every engine shape (1.1-1.5x slower; BENCHMARKS.md), so they only cost tuning time."""
    return os.environ.get("MAMBAST_SCAN2_TN", "0") == "1"


def fwd_config(key, run_one, config=None, grouped: bool = False, segmented: bool = False, v3_ok: bool = False):
    """The forward's (BD, num_warps[, GB[, P[, PF]]]): given, pinned by env MAMBAST_SCAN2_FWD_CONFIG, or tuned per shape
    key. grouped: G > 1 readouts without checkpoints, so configs that split the readouts into groups are candidates
    too; segmented: a long sequence without checkpoints, so the segmented form is a candidate too; v3_ok: no
    checkpoints and v3 allowed (`cross_scan_v3.allowed`), so v3's configs are candidates."""
    if config is not None:
        return tuple(config)
    env = v1._env_config("MAMBAST_SCAN2_FWD_CONFIG")
    if env is not None and (v3_ok or not (len(env) > 5 and env[5] == 2)):    # a pinned v3 config: inference only
        return env
    if v1._interpreting():
        return (8, 1)
    cands = FWD_CONFIGS + FWD_PF_CONFIGS + FWD_TN_CONFIGS + (FWD_G_CONFIGS + FWD_TN_G_CONFIGS if grouped else [])
    if segmented:
        cands = cands + [c for c in FWD_SEG_CONFIGS + FWD_TN_SEG_CONFIGS if grouped or not c[2]]
    if not prefetch4_allowed():
        cands = [c for c in cands if len(c) < 5 or c[4] == 1]
    if not tile_tn_allowed():
        cands = [c for c in cands if len(c) < 6 or c[5] != 1]
    if v3_ok:      # v3 (inference only): "all readouts in one program" (GB 0) for one readout, groups for several
        v3c = v3.FWD3_CONFIGS + (v3.FWD3_SEG_CONFIGS if segmented else []) + (v3.FWD3_G_CONFIGS if grouped else [])
        cands = cands + [c for c in v3c if bool(c[2]) == grouped]
    cands = list(dict.fromkeys(cands))
    return v1._tune(key, cands, run_one, _DEFAULT_FWD)


def cross_scan_fwd_cl(u_cl, delta_cl, A, B, C, D, delta_bias, h, w, save_states=False, config=None,
                      merge: bool = True, slot_dtype: torch.dtype = torch.float32):
    """Channel-last forward. Returns (y (S,G,L,Di) fp32, checkpoints or None, config); with merge=False, y is the
    unsummed direction slots (S,G,K,L,Di) (for a fused epilogue, `merge_norm.merge_norm_gate`), in slot_dtype: bf16
    halves what the epilogue reads (`slot_dtype_for`)."""
    assert merge or slot_dtype in (torch.float32, torch.bfloat16), slot_dtype
    slot_dtype = slot_dtype if not merge else torch.float32
    u_cl, delta_cl, A, D, delta_bias = (x.contiguous() for x in (u_cl, delta_cl, A, D, delta_bias))
    S, L, Di, G, N = _check(u_cl, delta_cl, A, B, C, D, delta_bias, h, w)
    # B and C transposed so that a step's N states are adjacent (and its G readout rows); for v3 in fp32 (it reads
    # them as int64 words, two states each), converted in the same copy
    v3_ok = v3.allowed() and not save_states
    bc = dict(dtype=torch.float32, memory_format=torch.contiguous_format) if v3_ok else {}
    Bt = B.transpose(-1, -2).to(**bc).contiguous()
    Ct = C.permute(0, 2, 4, 1, 3).to(**bc).contiguous()      # (S, K, L, G, N)
    dev = torch.cuda.get_device_name(u_cl.device) if u_cl.is_cuda else "cpu"
    key = (f"v2fwd6|S{S}|Di{Di}|L{L}|G{G}|N{N}|{u_cl.dtype}|{delta_cl.dtype}|{C.dtype}|save{int(save_states)}"
           f"|pf{int(prefetch4_allowed())}|tn{int(tile_tn_allowed())}|v3{int(v3_ok)}|{dev}")
    cfg = fwd_config(key, lambda c: _launch_fwd_cl(u_cl, delta_cl, A, Bt, Ct, D, delta_bias, h, w, c, save_states,
                                                   slot_dtype=slot_dtype),
                     config, grouped=G > 1 and not save_states, segmented=L >= SEG_MIN_L and not save_states,
                     v3_ok=v3_ok)
    slots, hck = _launch_fwd_cl(u_cl, delta_cl, A, Bt, Ct, D, delta_bias, h, w, cfg, save_states,
                                slot_dtype=slot_dtype)
    return (slots.sum(dim=2) if merge else slots), hck, cfg


def cross_scan_bwd_cl(u_cl, delta_cl, A, B, C, D, delta_bias, dy_cl, hck, h, w, BT=TRAIN_BT, config=None):
    """Channel-last backward (v1's chunked backward kernel in CL mode). Returns fp32 grads in channel-last:
    du (S,L,Di), ddelta (S,K,L,Di), dA, dB, dC, dD, dbias."""
    dy_cl = dy_cl.contiguous().float()
    B, C = B.contiguous(), C.contiguous()
    S, L, Di, G, N = _check(u_cl, delta_cl, A, B, C, D, delta_bias, h, w)
    cfg = config or v1._env_config("MAMBAST_SCAN2_BWD_CONFIG")

    def launch(cb):
        BD, NL, nw = cb
        NL = min(NL, N)
        K = K_DIRECTIONS
        n_chunks = triton.cdiv(L, BT)
        n_dblk = triton.cdiv(Di, BD)
        dev = u_cl.device
        bufs = (v1._empty((S, K, L, Di), dev), v1._empty((S, K, L, Di), dev), v1._empty((S, K, n_dblk, N, L), dev),
                v1._empty((S, G, K, n_dblk, N, L), dev), v1._empty((S, K * Di, N), dev), v1._empty((S, K * Di), dev),
                v1._empty((S, K * Di), dev))
        v1._cross_scan_bwd_kernel[(n_dblk, K, S)](u_cl, delta_cl, A, B, C, D, delta_bias, dy_cl, hck, *bufs,
                                                  Di, L, h, w, G, n_chunks, n_dblk,
                                                  N=N, NL=NL, BD=BD, BT=BT, CL=True, num_warps=nw)
        return bufs

    if cfg is None:
        if v1._interpreting():
            cfg = (4, 2, 1)
        else:
            dev = torch.cuda.get_device_name(u_cl.device)
            key = f"v2bwd|S{S}|Di{Di}|L{L}|G{G}|N{N}|BT{BT}|{u_cl.dtype}|{delta_cl.dtype}|{dev}"
            cfg = v1._tune(key, BWD_CONFIGS, launch, _DEFAULT_BWD)
    du_s, ddelta, dB_p, dC_p, dA_p, dD_p, db_p = launch(tuple(cfg))
    return du_s.sum(1), ddelta, dA_p.sum(0), dB_p.sum(2), dC_p.sum(3), dD_p.sum(0), db_p.sum(0)


# ----------------------------------------------------------------------------------------------------------------
# Backward (default; MAMBAST_SCAN_BWD=v1 selects v1's chunked kernel instead): sequential in t, like the forward.
# Per-channel quantities are (BD, 1) tensors and per-state ones (1, N) (never 1-D vectors that need a layout
# conversion to broadcast), every 2-D access is channel-contiguous (checkpoints (.., N, Di), the scratch slab
# (.., N, BD), A read transposed (N, K*Di), dA written transposed), and B_t / C_t rows are loaded once per step.
# dt is not stored: sigmoid(x) = 1 - exp(-softplus(x)) gives the softplus derivative from dt itself.
# ----------------------------------------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["H", "W", "G", "n_chunks", "n_dblk"])
def _seq_bwd3_kernel(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, dy_ptr, hck_ptr, scr_ptr,
                     du_ptr, ddl_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, db_ptr,
                     Di, L, H, W, G, n_chunks, n_dblk,
                     N: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr, PF: tl.constexpr = 0):
    # One program per (channel block, direction k, recurrence s) walks its direction's chunks of BT steps from the
    # last to the first. Per chunk: (1) from the forward's checkpoint, recompute the chunk's states and write the
    # state *before* each step (h_{t-1}) to a per-program scratch slab (each thread reads back what it wrote);
    # (2) walk the chunk backwards with the adjoint state gh = dL/dh_t (BD, N):
    #     gh_t = a_{t+1} * gh_{t+1} + sum_g dy_g,t C_g,t           (a_{t+1} carried from the previous step)
    # emitting per step du, ddelta (through the softplus) and this channel block's partials of dB_t and dC_g,t;
    # dA, dD and dbias accumulate in registers. Cross-program sums happen afterwards in a fixed order.
    pid_d = tl.program_id(0)
    k = tl.program_id(1)
    s = tl.program_id(2).to(tl.int64)
    offs_d = (pid_d * BD + tl.arange(0, BD))[:, None]
    mask_d = offs_d < Di
    offs_n = tl.arange(0, N)[None, :]
    c = k * Di + offs_d
    # (BD, N) tiles use d-contiguous addressing everywhere (checkpoints (.., N, Di), scratch (.., N, BD)) so that
    # one register layout (channels fastest) serves every 2-D load and store.
    A2 = tl.load(A_ptr + offs_n * (4 * Di) + c, mask=mask_d, other=0.0).to(tl.float32) * 1.4426950408889634
    Dv = tl.load(D_ptr + c, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + c, mask=mask_d, other=0.0).to(tl.float32)

    LD = tl.cast(Di, tl.int64) * L
    u_base = u_ptr + s * LD
    dl_base = dl_ptr + (s * 4 + k) * LD
    B_base = B_ptr + (s * 4 + k) * N * L                      # B: (S, K, L, N)
    C_base = C_ptr + (s * G * 4 + k) * N * L                  # C: (S, G, K, L, N)
    dy_base = dy_ptr + s * G * LD                             # dy: (S, G, L, Di)
    hck_base = hck_ptr + (s * 4 + k) * n_chunks * N * Di      # checkpoints: (S, K, n_chunks, N, Di)
    prog = (s * 4 + k) * n_dblk + pid_d
    scr_base = scr_ptr + prog * BT * N * BD                   # scratch states: (programs, BT, N, BD)
    du_base = du_ptr + (s * 4 + k) * LD
    ddl_base = ddl_ptr + (s * 4 + k) * LD
    dB_base = dB_ptr + prog * L * N                           # (S, K, n_dblk, L, N)
    dC_base = dC_ptr + ((s * G * 4 + k) * n_dblk + pid_d) * L * N
    stride_cg = 4 * N * L
    stride_dcg = 4 * n_dblk * L * N
    hck_off = offs_n * Di + offs_d
    scr_off = offs_n * BD + tl.arange(0, BD)[:, None]
    rev = k >= 2
    col = (k % 2) == 1

    gh = tl.zeros((BD, N), dtype=tl.float32)
    a_nx = tl.zeros((BD, N), dtype=tl.float32)
    dA_acc = tl.zeros((BD, N), dtype=tl.float32)
    dD_acc = tl.zeros((BD, 1), dtype=tl.float32)
    db_acc = tl.zeros((BD, 1), dtype=tl.float32)
    for cj in range(n_chunks):
        ci = n_chunks - 1 - cj
        i0 = ci * BT
        nb = tl.minimum(L - i0, BT)
        h = tl.load(hck_base + ci * N * Di + hck_off, mask=mask_d, other=0.0)
        # PF = 1: each pass issues the next step's loads before this step's arithmetic (as the forward's PF = 1);
        # PF = 0: load and use (the measured default)
        if PF:
            p = _pos(i0, L, H, W, rev, col)
            u_n = tl.load(u_base + p * Di + offs_d, mask=mask_d, other=0.0)
            d_n = tl.load(dl_base + p * Di + offs_d, mask=mask_d, other=0.0)
            B_n = tl.load(B_base + p * N + tl.arange(0, N))
        for j in range(0, nb):
            if PF:
                u_c, d_c, B_c = u_n, d_n, B_n
                pn = _pos(i0 + tl.minimum(j + 1, nb - 1), L, H, W, rev, col)
                u_n = tl.load(u_base + pn * Di + offs_d, mask=mask_d, other=0.0)
                d_n = tl.load(dl_base + pn * Di + offs_d, mask=mask_d, other=0.0)
                B_n = tl.load(B_base + pn * N + tl.arange(0, N))
            else:
                p = _pos(i0 + j, L, H, W, rev, col)
                u_c = tl.load(u_base + p * Di + offs_d, mask=mask_d, other=0.0)
                d_c = tl.load(dl_base + p * Di + offs_d, mask=mask_d, other=0.0)
                B_c = tl.load(B_base + p * N + tl.arange(0, N))
            u = u_c.to(tl.float32)
            dr = d_c.to(tl.float32) + bias
            Bt = B_c.to(tl.float32)[None, :]
            dt = tl.where(mask_d, _softplus(dr), 0.0)
            tl.store(scr_base + j * N * BD + scr_off, h)
            h = tl.exp2(dt * A2) * h + (dt * u) * Bt
        tl.debug_barrier()
        if PF:
            p = _pos(i0 + nb - 1, L, H, W, rev, col)
            dy_n = tl.load(dy_base + p * Di + offs_d, mask=mask_d, other=0.0)
            C_n = tl.load(C_base + p * N + tl.arange(0, N))
        for jj in range(0, nb):
            j = nb - 1 - jj
            p = _pos(i0 + j, L, H, W, rev, col)
            if PF:
                dy, C_c = dy_n, C_n
                pn = _pos(i0 + tl.maximum(j - 1, 0), L, H, W, rev, col)
                dy_n = tl.load(dy_base + pn * Di + offs_d, mask=mask_d, other=0.0)
                C_n = tl.load(C_base + pn * N + tl.arange(0, N))
            u = tl.load(u_base + p * Di + offs_d, mask=mask_d, other=0.0).to(tl.float32)
            dr = tl.load(dl_base + p * Di + offs_d, mask=mask_d, other=0.0).to(tl.float32) + bias
            Bt = tl.load(B_base + p * N + tl.arange(0, N)).to(tl.float32)[None, :]
            hp = tl.load(scr_base + j * N * BD + scr_off)
            dt = tl.where(mask_d, _softplus(dr), 0.0)
            a = tl.exp2(dt * A2)
            dtu = dt * u
            hpa = a * hp
            ht = hpa + dtu * Bt
            if not PF:
                dy = tl.load(dy_base + p * Di + offs_d, mask=mask_d, other=0.0)
                C_c = tl.load(C_base + p * N + tl.arange(0, N))
            C0 = C_c.to(tl.float32)[None, :]
            e = dy * C0
            dys = dy
            tl.store(dC_base + p * N + offs_n, tl.sum(dy * ht, axis=0, keep_dims=True))
            for g in range(1, G):
                dyg = tl.load(dy_base + g * LD + p * Di + offs_d, mask=mask_d, other=0.0)
                Cg = tl.load(C_base + g * stride_cg + p * N + tl.arange(0, N)).to(tl.float32)[None, :]
                e += dyg * Cg
                dys += dyg
                tl.store(dC_base + g * stride_dcg + p * N + offs_n, tl.sum(dyg * ht, axis=0, keep_dims=True))
            gh = a_nx * gh + e
            a_nx = a
            ghp = gh * hpa
            dA_acc += dt * ghp
            gB = tl.sum(gh * Bt, axis=1, keep_dims=True)
            ddt = tl.sum(ghp * A2, axis=1, keep_dims=True) * 0.6931471805599453 + gB * u
            sig = 1.0 - tl.exp(-dt)                      # sigmoid(dr) = 1 - exp(-softplus(dr))
            dz = tl.where(mask_d, ddt * sig, 0.0)
            tl.store(ddl_base + p * Di + offs_d, dz, mask=mask_d)
            tl.store(du_base + p * Di + offs_d, gB * dt + Dv * dys, mask=mask_d)
            tl.store(dB_base + p * N + offs_n, tl.sum(gh * dtu, axis=0, keep_dims=True))
            db_acc += dz
            dD_acc += dys * u
        tl.debug_barrier()
    KD = 4 * Di
    tl.store(dA_ptr + s * KD * N + offs_n * KD + c, dA_acc, mask=mask_d)
    tl.store(dD_ptr + s * KD + c, dD_acc, mask=mask_d)
    tl.store(db_ptr + s * KD + c, db_acc, mask=mask_d)


# (BD channels per program, num_warps[, register cap]). Measured on an H200 at the training shape (BENCHMARKS.md):
# (32, 1) 7.6 ms, (16, 1) 13.3, (32, 2) 14.4, (64, 4) 18.0; ptxas gives (32, 1) 255 registers (8 warps per SM), so
# the capped variants trade spills for occupancy; the tuner decides.
# H100 (session 2): (32,1) 7.82 ms, (32,1,168) 7.32, (32,1,128) 9.47, (16,1,96) 10.94, (64,2) 9.57; 200 / 224 untried.
SEQ_BWD3_CONFIGS = [(32, 1), (32, 1, 168), (32, 1, 200), (32, 1, 224), (32, 1, 128), (16, 1, 96), (64, 2), (64, 4),
                    # 4th element PF = 1: each pass issues the next step's loads first (session 5; not yet timed)
                    (32, 1, 0, 1), (32, 1, 168, 1), (32, 1, 200, 1), (16, 1, 0, 1)]


def known_tune_configs() -> dict[str, list[tuple]]:
    """Every config the tuner may store, by the kernel-version tag that starts its cache keys (for bundled picks)."""
    return {"v2fwd6": (FWD_CONFIGS + FWD_PF_CONFIGS + FWD_TN_CONFIGS + FWD_G_CONFIGS + FWD_TN_G_CONFIGS
                       + FWD_SEG_CONFIGS + FWD_TN_SEG_CONFIGS + v3.FWD3_CONFIGS + v3.FWD3_G_CONFIGS
                       + v3.FWD3_SEG_CONFIGS),
            "v2bwd": list(BWD_CONFIGS), "v3seqbwd5": SEQ_BWD3_CONFIGS}
_DEFAULT_SEQ_BWD3 = (32, 1, 168)


def cross_scan_bwd_seq3_cl(u_cl, delta_cl, A, B, C, D, delta_bias, dy_cl, hck, h, w, BT=TRAIN_BT, config=None):
    """Channel-last backward with the v3 sequential kernel (same inputs / outputs as `cross_scan_bwd_cl`); `hck`
    holds the forward's checkpoints every BT steps in the (S, K, n_chunks, N, Di) format. `config` = (BD, num_warps)
    or (BD, num_warps, maxnreg (0: none)[, PF: 1 issues each pass's next loads first])."""
    dy_cl = dy_cl.contiguous().float()
    u_cl, delta_cl, D, delta_bias = (x.contiguous() for x in (u_cl, delta_cl, D, delta_bias))
    S, L, Di, G, N = _check(u_cl, delta_cl, A, B, C, D, delta_bias, h, w)
    K = K_DIRECTIONS
    At = A.float().t().contiguous()                                   # (N, K*Di): channel-contiguous rows
    Bt = B.float().transpose(-1, -2).contiguous()                     # (S, K, L, N)
    Ct = C.float().transpose(-1, -2).contiguous()                     # (S, G, K, L, N)
    cfg = config or v1._env_config("MAMBAST_SCAN2_SEQ3_BWD_CONFIG")
    dev = u_cl.device

    def launch(cb):
        BD, nw = cb[:2]
        extra = {"maxnreg": cb[2]} if len(cb) > 2 and cb[2] else {}
        pf = cb[3] if len(cb) > 3 else 0
        n_chunks = triton.cdiv(L, BT)
        n_dblk = triton.cdiv(Di, BD)
        scratch = v1._empty((S * K * n_dblk, BT, N, BD), dev)
        bufs = (v1._empty((S, K, L, Di), dev), v1._empty((S, K, L, Di), dev), v1._empty((S, K, n_dblk, L, N), dev),
                v1._empty((S, G, K, n_dblk, L, N), dev), v1._empty((S, N, K * Di), dev), v1._empty((S, K * Di), dev),
                v1._empty((S, K * Di), dev))
        _seq_bwd3_kernel[(n_dblk, K, S)](u_cl, delta_cl, At, Bt, Ct, D, delta_bias, dy_cl, hck, scratch, *bufs,
                                         Di, L, h, w, G, n_chunks, n_dblk, N=N, BD=BD, BT=BT, PF=pf,
                                         num_warps=nw, num_stages=1, **extra)
        return bufs

    if cfg is None:
        if v1._interpreting():
            cfg = (8, 1)
        else:
            name = torch.cuda.get_device_name(dev)
            key = f"v3seqbwd5|S{S}|Di{Di}|L{L}|G{G}|N{N}|BT{BT}|{u_cl.dtype}|{delta_cl.dtype}|{name}"
            cfg = v1._tune(key, SEQ_BWD3_CONFIGS, launch, _DEFAULT_SEQ_BWD3)
    du_s, ddelta, dB_p, dC_p, dAt_p, dD_p, db_p = launch(tuple(cfg))
    return (du_s.sum(1), ddelta, dAt_p.sum(0).t(), dB_p.sum(2).transpose(-1, -2), dC_p.sum(3).transpose(-1, -2),
            dD_p.sum(0), db_p.sum(0))


def bwd_impl() -> str:
    """Backward used by CrossScanV2Fn, read at call time: 'v3' (default: the sequential kernel `_seq_bwd3_kernel`)
    or 'v1' (env MAMBAST_SCAN_BWD=v1: v1's chunked kernel reading channel-last, the earlier default)."""
    v = os.environ.get("MAMBAST_SCAN_BWD", "v3").lower()
    if v not in ("v1", "v3"):
        raise ValueError(f"MAMBAST_SCAN_BWD must be 'v1' or 'v3', got {v!r}")
    return v


class CrossScanV2Fn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, h, w, layout="cf", config=None, bwd_config=None):
        if layout == "cf":
            u_cl, delta_cl = _to_cl(u, delta)
        elif layout == "cl":
            u_cl, delta_cl = u.contiguous(), delta.contiguous()
        else:
            raise ValueError(f"layout must be 'cf' or 'cl', got {layout!r}")
        A, B, C, D, delta_bias = (x.contiguous() for x in (A, B, C, D, delta_bias))
        need_grad = any(ctx.needs_input_grad[:7])
        y, hck, _ = cross_scan_fwd_cl(u_cl, delta_cl, A, B, C, D, delta_bias, h, w, save_states=need_grad,
                                      config=config)
        if need_grad:
            ctx.save_for_backward(u_cl, delta_cl, A, B, C, D, delta_bias, hck)
            ctx.hw, ctx.layout, ctx.bwd_config = (h, w), layout, bwd_config
            ctx.dtypes = (u.dtype, delta.dtype)
        return y.transpose(-1, -2).contiguous() if layout == "cf" else y

    @staticmethod
    def backward(ctx, dy):
        u_cl, delta_cl, A, B, C, D, delta_bias, hck = ctx.saved_tensors
        h, w = ctx.hw
        dy_cl = dy.transpose(-1, -2) if ctx.layout == "cf" else dy
        bwd = cross_scan_bwd_seq3_cl if bwd_impl() == "v3" else cross_scan_bwd_cl   # read at call time
        du, ddelta, dA, dB, dC, dD, dbias = bwd(u_cl, delta_cl, A, B, C, D, delta_bias, dy_cl, hck,
                                                h, w, TRAIN_BT, ctx.bwd_config)
        if ctx.layout == "cf":
            du, ddelta = du.transpose(1, 2).contiguous(), ddelta.transpose(2, 3).contiguous()
        ud, dd = ctx.dtypes
        return (du.to(ud), ddelta.to(dd), dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype), dD.to(D.dtype),
                dbias.to(delta_bias.dtype), None, None, None, None, None)


def cross_scan_triton_v2(u, delta, A, B, C, D, delta_bias, h, w, layout="cf", config=None, bwd_config=None):
    """v2 4-direction selective scan. layout='cf': the `cross_scan_ref` contract. layout='cl': u (S,L,Di),
    delta (S,K,L,Di), B (S,K,N,L), C (S,G,K,N,L) -> y (S,G,L,Di) fp32. `config` = (BD, num_warps) of the forward,
    `bwd_config` = (BD, NL, num_warps) of the backward."""
    return CrossScanV2Fn.apply(u, delta, A, B, C, D, delta_bias, h, w, layout, config, bwd_config)


def scan_impl() -> str:
    """'v2' (default) or 'v1' (env MAMBAST_SCAN_IMPL=v1: the chunked associative-scan kernel, as a fallback)."""
    return "v1" if os.environ.get("MAMBAST_SCAN_IMPL", "v2").lower() == "v1" else "v2"

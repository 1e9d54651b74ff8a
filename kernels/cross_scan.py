"""Fused 4-direction ("cross") selective scan in Triton: forward, backward, autograd wrapper.

Same contract as `scan_ref.cross_scan_ref` (read its docstring for shapes): everything arrives in grid order and each
program reads its direction by index arithmetic, so the four direction copies of u / delta / B / C are never built.

Layout of the work
------------------
One program owns (recurrence s, direction k, a block of BD channels) and walks its direction's sequence in chunks of
BT steps. Per chunk it loads the (BT, BD) tiles of u and raw delta and the (BT, N) tiles of B (and of each C_g) at
the grid positions of that direction's steps, then works on a (BT, N/NL, BD, NL) register tile (state
n = nk*NL + nl; with Triton's default layout BT and N/NL sit in registers, NL states on NL lanes, channels on the
other lanes and the warps, so the scan is sequential inside a thread and the readout needs log2(NL) shuffles):

    dt  = softplus(delta + bias)                      (BT, BD)    fp32
    a   = exp2(dt * A * log2(e))                      (BT, N, BD)
    b   = dt * u * B, with a * h_carry folded into the chunk's first step
    h   = chunk-local linear scan of (a, b)           (tl.associative_scan along BT; its running product is dead)
    y_g = sum_n C_g * h + D * u                       (BT, BD)  for every readout g, in the same chunk

The two reversed directions (k = 2, 3) walk their chunks from the end of the sequence and scan each chunk with
`reverse=True`, so every load is ascending (vectorisable for the row-major pair). Column-major directions (k = 1, 3)
gather with stride w.

Merge: each direction writes its own slot of a (S, G, K, Di, L) fp32 buffer, summed afterwards in a fixed order.
That keeps the output bitwise deterministic (fp32 atomics would not be: the order of four adds would vary).

Backward: the forward stores the state at the start of every chunk (S, K, n_chunks, N, Di) fp32. The backward
program walks chunks in reverse scan order, recomputes the chunk's states from its checkpoint, and runs the adjoint
recurrence gh_t = sum_g dy_g C_g + a_{t+1} gh_{t+1} as a reversed chunk scan (a_{t+1} from a one-step-shifted load).
Reductions that cross programs (dB, dC over channel blocks; du over directions; dA, dD, delta_bias over S) go
through per-program partial buffers summed afterwards in a fixed order: deterministic.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import torch
import triton
import triton.language as tl

from .scan_ref import K_DIRECTIONS, check_shapes

LOG2E = 1.4426950408889634


# ----------------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------------
@triton.jit
def _affine_combine(a1, b1, a2, b2):
    # (a1, b1) applied first, then (a2, b2):  x -> a2 * (a1 * x + b1) + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _softplus(x):
    # log(1 + e^x) with the CUDA kernel's pass-through above 20; e^x below -15 (relative error < 2e-7 there).
    e = tl.exp(x)
    return tl.where(x > 20.0, x, tl.where(x < -15.0, e, tl.log(1.0 + e)))


@triton.jit
def _positions(q, H, W, COL: tl.constexpr):
    # Base-order index q of a direction (row-major for k = 0/2, column-major for k = 1/3) -> grid index.
    if COL:
        return (q % H) * W + q // H
    else:
        return q


@triton.jit
def _chunk_start(ci, L, BT: tl.constexpr, REV: tl.constexpr):
    # First base-order index of chunk ci; reversed directions take their chunks from the end.
    if REV:
        return L - (ci + 1) * BT
    else:
        return ci * BT


@triton.jit
def _fwd_direction(u_base, dl_base, B_base, C_base, y_base, hck_base,
                   A2, Dv, bias, offs_d, mask_d, nidx,
                   Di, L, H, W, G, n_chunks, stride_cg, stride_yg,
                   NK: tl.constexpr, NL: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
                   REV: tl.constexpr, COL: tl.constexpr, SAVE: tl.constexpr):
    # Register tile (BT, NK, BD, NL): state n = nk * NL + nl; NL states share a lane group, NK stay in-thread.
    offs_t = tl.arange(0, BT)
    hst = tl.zeros((NK, BD, NL), dtype=tl.float32)
    hck_off = nidx[:, None, :] * Di + offs_d[None, :, None]                        # (NK, BD, NL)
    mask_h = mask_d[None, :, None]
    for ci in range(n_chunks):
        q = _chunk_start(ci, L, BT, REV) + offs_t
        mt = (q >= 0) & (q < L)
        pos = _positions(q, H, W, COL)
        m2 = mt[:, None] & mask_d[None, :]
        td = offs_d[None, :] * L + pos[:, None]                                   # (BT, BD)
        tn = nidx[None, :, :] * L + pos[:, None, None]                            # (BT, NK, NL)
        u = tl.load(u_base + td, mask=m2, other=0.0).to(tl.float32)
        dr = tl.load(dl_base + td, mask=m2, other=0.0).to(tl.float32) + bias[None, :]
        dt = tl.where(m2, _softplus(dr), 0.0)                                     # masked steps: identity map
        Bt = tl.load(B_base + tn, mask=mt[:, None, None], other=0.0).to(tl.float32)
        a = tl.exp2(dt[:, None, :, None] * A2[None, :, :, :])                     # (BT, NK, BD, NL)
        b = (dt * u)[:, None, :, None] * Bt[:, :, None, :]
        if SAVE:
            tl.store(hck_base + ci * NK * NL * Di + hck_off, hst, mask=mask_h)
        # Fold the carried state into the chunk's first step (b_0 += a_0 * h), so the scan's running product is
        # dead code: with BT held in registers the scan is then one FMA per element.
        if REV:
            b = tl.where((offs_t == BT - 1)[:, None, None, None], b + a * hst[None], b)
        else:
            b = tl.where((offs_t == 0)[:, None, None, None], b + a * hst[None], b)
        _, hs = tl.associative_scan((a, b), 0, _affine_combine, reverse=REV)       # states after each step
        du = Dv[None, :] * u
        for g in range(G):
            Ct = tl.load(C_base + g * stride_cg + tn, mask=mt[:, None, None], other=0.0).to(tl.float32)
            y = tl.sum(tl.sum(hs * Ct[:, :, None, :], axis=1), axis=2) + du
            tl.store(y_base + g * stride_yg + td, y, mask=m2)
        if REV:  # carry = state after the chunk's last step in scan order
            hst = tl.sum(tl.where((offs_t == 0)[:, None, None, None], hs, 0.0), axis=0)
        else:
            hst = tl.sum(tl.where((offs_t == BT - 1)[:, None, None, None], hs, 0.0), axis=0)


@triton.jit(do_not_specialize=["H", "W", "G", "n_chunks"])
def _cross_scan_fwd_kernel(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, y_ptr, hck_ptr,
                           Di, L, H, W, G, n_chunks,
                           N: tl.constexpr, NL: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
                           SAVE: tl.constexpr):
    NK: tl.constexpr = N // NL
    pid_d = tl.program_id(0)
    k = tl.program_id(1)
    s = tl.program_id(2).to(tl.int64)
    offs_d = pid_d * BD + tl.arange(0, BD)
    mask_d = offs_d < Di
    nidx = tl.arange(0, NK)[:, None] * NL + tl.arange(0, NL)[None, :]            # (NK, NL) state index
    c = k * Di + offs_d
    A2 = tl.load(A_ptr + c[None, :, None] * N + nidx[:, None, :], mask=mask_d[None, :, None],
                 other=0.0).to(tl.float32) * 1.4426950408889634                   # (NK, BD, NL)
    Dv = tl.load(D_ptr + c, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + c, mask=mask_d, other=0.0).to(tl.float32)

    DL = tl.cast(Di, tl.int64) * L                                # int64: G * K * Di * L may pass 2**31
    u_base = u_ptr + s * DL
    dl_base = dl_ptr + (s * 4 + k) * DL
    B_base = B_ptr + (s * 4 + k) * N * L
    C_base = C_ptr + (s * G * 4 + k) * N * L                  # C: (S, G, K, N, L)
    y_base = y_ptr + (s * G * 4 + k) * DL                     # slots: (S, G, K, Di, L)
    hck_base = hck_ptr + (s * 4 + k) * n_chunks * N * Di      # checkpoints: (S, K, n_chunks, N, Di)
    stride_cg = 4 * N * L
    stride_yg = 4 * DL
    if k == 0:
        _fwd_direction(u_base, dl_base, B_base, C_base, y_base, hck_base, A2, Dv, bias, offs_d, mask_d, nidx,
                       Di, L, H, W, G, n_chunks, stride_cg, stride_yg, NK, NL, BD, BT, False, False, SAVE)
    elif k == 1:
        _fwd_direction(u_base, dl_base, B_base, C_base, y_base, hck_base, A2, Dv, bias, offs_d, mask_d, nidx,
                       Di, L, H, W, G, n_chunks, stride_cg, stride_yg, NK, NL, BD, BT, False, True, SAVE)
    elif k == 2:
        _fwd_direction(u_base, dl_base, B_base, C_base, y_base, hck_base, A2, Dv, bias, offs_d, mask_d, nidx,
                       Di, L, H, W, G, n_chunks, stride_cg, stride_yg, NK, NL, BD, BT, True, False, SAVE)
    else:
        _fwd_direction(u_base, dl_base, B_base, C_base, y_base, hck_base, A2, Dv, bias, offs_d, mask_d, nidx,
                       Di, L, H, W, G, n_chunks, stride_cg, stride_yg, NK, NL, BD, BT, True, True, SAVE)


@triton.jit
def _bwd_direction(u_base, dl_base, B_base, C_base, dy_base, hck_base, du_base, ddl_base, dB_base, dC_base,
                   A2, Dv, bias, offs_d, mask_d, nidx,
                   Di, L, H, W, G, n_chunks, stride_cg, stride_dyg, stride_dcg,
                   NK: tl.constexpr, NL: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
                   REV: tl.constexpr, COL: tl.constexpr, CL: tl.constexpr = False):
    offs_t = tl.arange(0, BT)
    An = A2 * 0.6931471805599453                                                  # natural-log A
    ghc = tl.zeros((NK, BD, NL), dtype=tl.float32)                                # dL/dh at the chunk's successor
    dA_acc = tl.zeros((NK, BD, NL), dtype=tl.float32)
    dD_acc = tl.zeros((BD,), dtype=tl.float32)
    db_acc = tl.zeros((BD,), dtype=tl.float32)
    hck_off = nidx[:, None, :] * Di + offs_d[None, :, None]
    for cj in range(n_chunks):
        ci = n_chunks - 1 - cj
        q = _chunk_start(ci, L, BT, REV) + offs_t
        if REV:
            qn = q - 1
        else:
            qn = q + 1
        mt = (q >= 0) & (q < L)
        mn = (qn >= 0) & (qn < L)
        pos = _positions(q, H, W, COL)
        posn = _positions(qn, H, W, COL)
        m2 = mt[:, None] & mask_d[None, :]
        mn2 = mn[:, None] & mask_d[None, :]
        m3 = mt[:, None, None]
        if CL:  # channel-last (v2): u (S, L, Di), delta/du/ddelta (S, K, L, Di), dy (S, G, L, Di): coalesced in d
            td = pos[:, None] * Di + offs_d[None, :]                              # (BT, BD)
            tdn = posn[:, None] * Di + offs_d[None, :]
        else:
            td = offs_d[None, :] * L + pos[:, None]                               # (BT, BD)
            tdn = offs_d[None, :] * L + posn[:, None]
        tn = nidx[None, :, :] * L + pos[:, None, None]                            # (BT, NK, NL)
        u = tl.load(u_base + td, mask=m2, other=0.0).to(tl.float32)
        dr = tl.load(dl_base + td, mask=m2, other=0.0).to(tl.float32) + bias[None, :]
        dt = tl.where(m2, _softplus(dr), 0.0)
        drn = tl.load(dl_base + tdn, mask=mn2, other=0.0).to(tl.float32) + bias[None, :]
        dtn = tl.where(mn2, _softplus(drn), 0.0)
        Bt = tl.load(B_base + tn, mask=m3, other=0.0).to(tl.float32)[:, :, None, :]   # (BT, NK, 1, NL)
        a = tl.exp2(dt[:, None, :, None] * A2[None])
        dtu = dt * u
        b = dtu[:, None, :, None] * Bt
        h0 = tl.load(hck_base + ci * NK * NL * Di + hck_off, mask=mask_d[None, :, None], other=0.0)
        if REV:
            hb = tl.where((offs_t == BT - 1)[:, None, None, None], b + a * h0[None], b)
        else:
            hb = tl.where((offs_t == 0)[:, None, None, None], b + a * h0[None], b)
        _, hs = tl.associative_scan((a, hb), 0, _affine_combine, reverse=REV)
        an = tl.exp2(dtn[:, None, :, None] * A2[None])                             # a_{t+1} in scan order
        e = tl.zeros((BT, NK, BD, NL), dtype=tl.float32)
        dys = tl.zeros((BT, BD), dtype=tl.float32)
        for g in range(G):
            dy = tl.load(dy_base + g * stride_dyg + td, mask=m2, other=0.0)
            Ct = tl.load(C_base + g * stride_cg + tn, mask=m3, other=0.0).to(tl.float32)
            e += dy[:, None, :, None] * Ct[:, :, None, :]
            dC = tl.sum(dy[:, None, :, None] * hs, axis=2)                         # (BT, NK, NL), this channel block
            tl.store(dC_base + g * stride_dcg + tn, dC, mask=m3)
            dys += dy
        # The adjoint runs against scan order; the carried gradient enters at the chunk's last step.
        if REV:
            e = tl.where((offs_t == 0)[:, None, None, None], e + an * ghc[None], e)
            _, gh = tl.associative_scan((an, e), 0, _affine_combine, reverse=False)   # dL/dh_t
        else:
            e = tl.where((offs_t == BT - 1)[:, None, None, None], e + an * ghc[None], e)
            _, gh = tl.associative_scan((an, e), 0, _affine_combine, reverse=True)
        hpa = hs - b                                                               # a_t * h_{t-1}
        dA_acc += tl.sum(gh * dt[:, None, :, None] * hpa, axis=0)
        gB = tl.sum(tl.sum(gh * Bt, axis=1), axis=2)                               # sum_n gh * B   (BT, BD)
        ddt = tl.sum(tl.sum(gh * hpa * An[None], axis=1), axis=2) + gB * u
        sig = 1.0 / (1.0 + tl.exp(-dr))
        dz = tl.where(m2, tl.where(dr > 20.0, ddt, ddt * sig), 0.0)
        tl.store(ddl_base + td, dz, mask=m2)
        db_acc += tl.sum(dz, axis=0)
        du = gB * dt + Dv[None, :] * dys
        tl.store(du_base + td, du, mask=m2)
        dB = tl.sum(gh * dtu[:, None, :, None], axis=2)
        tl.store(dB_base + tn, dB, mask=m3)
        dD_acc += tl.sum(dys * u, axis=0)
        if REV:  # carry = dL/dh at the chunk's first step in scan order
            ghc = tl.sum(tl.where((offs_t == BT - 1)[:, None, None, None], gh, 0.0), axis=0)
        else:
            ghc = tl.sum(tl.where((offs_t == 0)[:, None, None, None], gh, 0.0), axis=0)
    return dA_acc, dD_acc, db_acc


@triton.jit(do_not_specialize=["H", "W", "G", "n_chunks", "n_dblk"])
def _cross_scan_bwd_kernel(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, dy_ptr, hck_ptr,
                           du_ptr, ddl_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, db_ptr,
                           Di, L, H, W, G, n_chunks, n_dblk,
                           N: tl.constexpr, NL: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
                           CL: tl.constexpr = False):
    NK: tl.constexpr = N // NL
    pid_d = tl.program_id(0)
    k = tl.program_id(1)
    s = tl.program_id(2).to(tl.int64)
    offs_d = pid_d * BD + tl.arange(0, BD)
    mask_d = offs_d < Di
    nidx = tl.arange(0, NK)[:, None] * NL + tl.arange(0, NL)[None, :]
    c = k * Di + offs_d
    A_off = c[None, :, None] * N + nidx[:, None, :]                                # (NK, BD, NL)
    A2 = tl.load(A_ptr + A_off, mask=mask_d[None, :, None], other=0.0).to(tl.float32) * 1.4426950408889634
    Dv = tl.load(D_ptr + c, mask=mask_d, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + c, mask=mask_d, other=0.0).to(tl.float32)

    DL = tl.cast(Di, tl.int64) * L                                # int64: G * K * Di * L may pass 2**31
    u_base = u_ptr + s * DL
    dl_base = dl_ptr + (s * 4 + k) * DL
    B_base = B_ptr + (s * 4 + k) * N * L
    C_base = C_ptr + (s * G * 4 + k) * N * L                   # C: (S, G, K, N, L)
    dy_base = dy_ptr + s * G * DL                              # dy: (S, G, Di, L)
    hck_base = hck_ptr + (s * 4 + k) * n_chunks * N * Di
    du_base = du_ptr + (s * 4 + k) * DL                        # du slots: (S, K, Di, L)
    ddl_base = ddl_ptr + (s * 4 + k) * DL                      # ddelta: (S, K, Di, L)
    dB_base = dB_ptr + ((s * 4 + k) * n_dblk + pid_d) * N * L   # dB partials: (S, K, n_dblk, N, L)
    dC_base = dC_ptr + ((s * G * 4 + k) * n_dblk + pid_d) * N * L  # dC partials: (S, G, K, n_dblk, N, L)
    stride_cg = 4 * N * L
    stride_dyg = DL
    stride_dcg = 4 * n_dblk * N * L
    if k == 0:
        dA_acc, dD_acc, db_acc = _bwd_direction(
            u_base, dl_base, B_base, C_base, dy_base, hck_base, du_base, ddl_base, dB_base, dC_base,
            A2, Dv, bias, offs_d, mask_d, nidx, Di, L, H, W, G, n_chunks, stride_cg, stride_dyg, stride_dcg,
            NK, NL, BD, BT, False, False, CL)
    elif k == 1:
        dA_acc, dD_acc, db_acc = _bwd_direction(
            u_base, dl_base, B_base, C_base, dy_base, hck_base, du_base, ddl_base, dB_base, dC_base,
            A2, Dv, bias, offs_d, mask_d, nidx, Di, L, H, W, G, n_chunks, stride_cg, stride_dyg, stride_dcg,
            NK, NL, BD, BT, False, True, CL)
    elif k == 2:
        dA_acc, dD_acc, db_acc = _bwd_direction(
            u_base, dl_base, B_base, C_base, dy_base, hck_base, du_base, ddl_base, dB_base, dC_base,
            A2, Dv, bias, offs_d, mask_d, nidx, Di, L, H, W, G, n_chunks, stride_cg, stride_dyg, stride_dcg,
            NK, NL, BD, BT, True, False, CL)
    else:
        dA_acc, dD_acc, db_acc = _bwd_direction(
            u_base, dl_base, B_base, C_base, dy_base, hck_base, du_base, ddl_base, dB_base, dC_base,
            A2, Dv, bias, offs_d, mask_d, nidx, Di, L, H, W, G, n_chunks, stride_cg, stride_dyg, stride_dcg,
            NK, NL, BD, BT, True, True, CL)
    KD = 4 * Di
    tl.store(dA_ptr + s * KD * N + A_off, dA_acc, mask=mask_d[None, :, None])     # (S, K*Di, N)
    tl.store(dD_ptr + s * KD + c, dD_acc, mask=mask_d)                             # (S, K*Di)
    tl.store(db_ptr + s * KD + c, db_acc, mask=mask_d)                             # (S, K*Di)


# ----------------------------------------------------------------------------------------------------------------
# Configs and the shape-keyed tuning cache
# ----------------------------------------------------------------------------------------------------------------
# Forward: (BD channels per program, BT steps per chunk, NL lanes sharing one channel's N states, num_warps).
# With Triton's default layout the (BT, N/NL, BD, NL) tile puts NL states on NL lanes, 32/NL channels on the rest of
# the warp, the warps on further channels, and BT and N/NL in registers: the chunk scan and N/NL of the readout sum
# run inside a thread, the readout finishes with log2(NL) shuffles. BT is also the backward's checkpoint interval.
FWD_CONFIGS = [(64, 8, 2, 4), (32, 8, 2, 2), (32, 16, 4, 4), (64, 16, 4, 8), (64, 16, 2, 4)]
# Training forward (saves checkpoints every BT steps): BT = 8 keeps the backward's tile small enough for registers.
TRAIN_FWD_CONFIGS = [(64, 8, 2, 4), (32, 8, 2, 2), (32, 8, 4, 4)]
# Backward: (BD, NL, num_warps); its BT is the forward's.
BWD_CONFIGS = [(16, 4, 4), (16, 8, 4), (32, 8, 8)]
_DEFAULT_FWD = (64, 8, 2, 4)
_DEFAULT_BWD = (16, 4, 4)
_TUNE_CACHE: dict[str, list[int]] = {}
_TUNE_FILE = Path(os.environ.get("MAMBAST_TUNE_CACHE", Path.home() / ".cache" / "mambast" / "cross_scan_tune.json"))
# Picks measured on the GPUs we benchmark on, shipped so that a first run there skips the timing (10-20 s on a fresh
# H100 for the usual shapes). Keys name the GPU model, the kernel version and the shapes, so they only ever apply
# where they were measured; the user's own cache (_TUNE_FILE) takes precedence and holds only what differs.
_BUNDLED_TUNE_DIR = Path(__file__).resolve().parent / "tuned"
_BUNDLED: dict[str, list[int]] = {}
_tune_loaded = False


# Tests set this to fill every internal buffer with NaN before the kernels run: an element a kernel fails to write
# then shows up as NaN in the result or the gradients.
POISON_BUFFERS = False


def _empty(shape, device, dtype=torch.float32) -> torch.Tensor:
    t = torch.empty(shape, device=device, dtype=dtype)
    return t.fill_(float("nan")) if POISON_BUFFERS else t


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _load_tune_cache() -> None:
    global _tune_loaded
    if _tune_loaded:
        return
    _tune_loaded = True
    for f in sorted(_BUNDLED_TUNE_DIR.glob("*.json")):
        try:
            _BUNDLED.update(json.loads(f.read_text()))
        except Exception:  # a broken bundled file only costs the timing it would have saved
            pass
    _TUNE_CACHE.update(_BUNDLED)
    try:
        _TUNE_CACHE.update(json.loads(_TUNE_FILE.read_text()))
    except Exception:
        pass


def _save_tune_cache() -> None:
    """Write the user's cache: the picks this machine timed itself (bundled picks are not copied into it)."""
    own = {k: v for k, v in _TUNE_CACHE.items() if _BUNDLED.get(k) != list(v)}
    try:
        _TUNE_FILE.parent.mkdir(parents=True, exist_ok=True)
        _TUNE_FILE.write_text(json.dumps(own, indent=0, sort_keys=True))
    except Exception:
        pass


def _tune(key: str, candidates, run_one, default):
    """Pick the fastest candidate for `key` (timed once per key, cached in memory and on disk)."""
    if _interpreting() or os.environ.get("MAMBAST_SCAN_TUNE", "1") == "0":
        return default
    _load_tune_cache()
    if key in _TUNE_CACHE:
        return tuple(_TUNE_CACHE[key])
    near = None if os.environ.get("MAMBAST_SCAN_TUNE") == "full" else _nearby_pick(key, candidates)
    if near is not None:
        return near
    best, best_ms = default, float("inf")
    for cand in candidates:
        try:
            ms = triton.testing.do_bench(lambda: run_one(cand), warmup=5, rep=20, return_mode="median")
        except Exception:  # a config that does not compile or fit is skipped
            continue
        if ms < best_ms:
            best, best_ms = cand, ms
    _TUNE_CACHE[key] = list(best)
    _save_tune_cache()
    return best


_SG_FIELDS = re.compile(r"\|S(\d+)\|(.*)\|G(\d+)\|")


def _nearby_pick(key: str, candidates):
    """The pick of a timed key that differs from `key` only in the batch count S and the readout count G (the nearest
    in log S + log G; G > 1 on both sides or on neither), when it is one of `candidates`; else None. A folder's last,
    partial batch or a video's last frames then run at once on the pick of the full batch, where timing the new shape
    stalls the job on a fresh machine: session 10, a 3000-picture folder on an H200 took 20.3 s where its steady rate
    said ~8; session 11, a 2000-picture folder's last batch of 16 (4x from the nearest timed batch, outside the 2x this
    rule first allowed) spent 33 s timing and ran at 54 pictures/s wall against 560 steady.
    Within 2x in both S and G any pick is borrowed. Further away only a pick without segments (config element 3 <= 1),
    and only for a key with S >= 4 or G >= 4: segments pay only with few recurrences and lose badly with many (v3 at
    1080p B8: 19.7-32.6 vs 11.8 ms, session 9), so a single picture's shape is timed rather than given a batch's pick,
    and a batch never takes a single picture's segmented one. Not saved: the user's cache holds only what was timed.
    `MAMBAST_SCAN_TUNE=full` times every new key instead (to collect picks for kernels/tuned/)."""
    m = _SG_FIELDS.search(key)
    if m is None:
        return None
    S, G = int(m.group(1)), int(m.group(3))
    allowed = {tuple(c) for c in candidates}
    best = None
    for k, v in _TUNE_CACHE.items():
        m2 = _SG_FIELDS.search(k)
        if m2 is None or k[:m2.start()] != key[:m.start()] or k[m2.end():] != key[m.end():] or m2.group(2) != m.group(2):
            continue
        S2, G2 = int(m2.group(1)), int(m2.group(3))
        if (G2 > 1) != (G > 1) or tuple(v) not in allowed:
            continue
        near = S <= 2 * S2 and S2 <= 2 * S and G <= 2 * G2 and G2 <= 2 * G
        if not near and (len(v) > 3 and v[3] > 1 or (S < 4 and G < 4)):
            continue
        d = abs(math.log(S2 / S)) + abs(math.log(G2 / G))
        if best is None or d < best[0]:
            best = (d, tuple(v))
    return None if best is None else best[1]


def _env_config(name: str):
    v = os.environ.get(name)
    return tuple(int(x) for x in v.split(",")) if v else None


# ----------------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------------
def _check_shapes(u, delta, A, B, C, D, delta_bias, h, w):
    S, Di, L, G, N = check_shapes(u, delta, A, B, C, D, delta_bias, h, w)
    assert N & (N - 1) == 0, f"d_state N={N} must be a power of two"
    return S, Di, L, G, N


def _launch_fwd(u, delta, A, B, C, D, delta_bias, h, w, cfg, save: bool):
    S, Di, L, G, N = _check_shapes(u, delta, A, B, C, D, delta_bias, h, w)
    BD, BT, NL, nw = cfg
    NL = min(NL, N)
    n_chunks = triton.cdiv(L, BT)
    slots = _empty((S, G, K_DIRECTIONS, Di, L), u.device)
    if save:
        hck = _empty((S, K_DIRECTIONS, n_chunks, N, Di), u.device)
    else:
        hck = slots  # never written (SAVE=False)
    grid = (triton.cdiv(Di, BD), K_DIRECTIONS, S)
    _cross_scan_fwd_kernel[grid](u, delta, A, B, C, D, delta_bias, slots, hck,
                                 Di, L, h, w, G, n_chunks,
                                 N=N, NL=NL, BD=BD, BT=BT, SAVE=save, num_warps=nw)
    return slots, (hck if save else None)


def _fwd_config(u, C, A, L, cfg=None):
    if cfg is not None:
        return tuple(cfg)
    env = _env_config("MAMBAST_SCAN_FWD_CONFIG")
    if env is not None:
        return env
    if _interpreting():
        return (8, 4, 2, 1)
    return None


def _merge(slots: torch.Tensor) -> torch.Tensor:
    # (S, G, K, Di, L) -> (S, G, Di, L); fixed summation order, deterministic.
    return slots.sum(dim=2)


def cross_scan_fwd(u, delta, A, B, C, D, delta_bias, h, w, save_states=False, config=None):
    """Forward only. Returns (y (S,G,Di,L) fp32, checkpoints or None, config used)."""
    u, delta, A, B, C, D, delta_bias = (x.contiguous() for x in (u, delta, A, B, C, D, delta_bias))
    S, Di, L, G, N = _check_shapes(u, delta, A, B, C, D, delta_bias, h, w)
    cfg = _fwd_config(u, C, A, L, config)
    if cfg is None:
        key = f"fwd|S{S}|Di{Di}|L{L}|G{G}|N{N}|{u.dtype}|{delta.dtype}|{C.dtype}|save{int(save_states)}|{torch.cuda.get_device_name(u.device)}"
        cfg = _tune(key, TRAIN_FWD_CONFIGS if save_states else FWD_CONFIGS,
                    lambda c: _launch_fwd(u, delta, A, B, C, D, delta_bias, h, w, c, save_states), _DEFAULT_FWD)
    slots, hck = _launch_fwd(u, delta, A, B, C, D, delta_bias, h, w, cfg, save_states)
    return _merge(slots), hck, cfg


def _launch_bwd(u, delta, A, B, C, D, delta_bias, dy, hck, h, w, BT, cfg):
    S, Di, L, G, N = _check_shapes(u, delta, A, B, C, D, delta_bias, h, w)
    BD, NL, nw = cfg
    NL = min(NL, N)
    K = K_DIRECTIONS
    n_chunks = triton.cdiv(L, BT)
    n_dblk = triton.cdiv(Di, BD)
    dev = u.device
    du_slots = _empty((S, K, Di, L), dev)
    ddelta = _empty((S, K, Di, L), dev)
    dB_part = _empty((S, K, n_dblk, N, L), dev)
    dC_part = _empty((S, G, K, n_dblk, N, L), dev)
    dA_part = _empty((S, K * Di, N), dev)
    dD_part = _empty((S, K * Di), dev)
    db_part = _empty((S, K * Di), dev)
    grid = (n_dblk, K, S)
    _cross_scan_bwd_kernel[grid](u, delta, A, B, C, D, delta_bias, dy, hck,
                                 du_slots, ddelta, dB_part, dC_part, dA_part, dD_part, db_part,
                                 Di, L, h, w, G, n_chunks, n_dblk,
                                 N=N, NL=NL, BD=BD, BT=BT, num_warps=nw)
    return du_slots, ddelta, dB_part, dC_part, dA_part, dD_part, db_part


def cross_scan_bwd(u, delta, A, B, C, D, delta_bias, dy, hck, h, w, BT, config=None):
    """Backward from the forward's checkpoints. Returns fp32 grads (du, ddelta, dA, dB, dC, dD, dbias)."""
    dy = dy.contiguous().float()
    S, Di, L, G, N = _check_shapes(u, delta, A, B, C, D, delta_bias, h, w)
    cfg = config or _env_config("MAMBAST_SCAN_BWD_CONFIG")
    if cfg is None:
        if _interpreting():
            cfg = (4, 2, 1)
        else:
            key = f"bwd|S{S}|Di{Di}|L{L}|G{G}|N{N}|BT{BT}|{u.dtype}|{delta.dtype}|{torch.cuda.get_device_name(u.device)}"
            cfg = _tune(key, BWD_CONFIGS,
                        lambda c: _launch_bwd(u, delta, A, B, C, D, delta_bias, dy, hck, h, w, BT, c), _DEFAULT_BWD)
    du_slots, ddelta, dB_part, dC_part, dA_part, dD_part, db_part = _launch_bwd(
        u, delta, A, B, C, D, delta_bias, dy, hck, h, w, BT, cfg)
    return (du_slots.sum(1), ddelta, dA_part.sum(0), dB_part.sum(2), dC_part.sum(3),
            dD_part.sum(0), db_part.sum(0))


# ----------------------------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------------------------
class CrossScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, h, w, config=None, bwd_config=None):
        u, delta, A, B, C, D, delta_bias = (x.contiguous() for x in (u, delta, A, B, C, D, delta_bias))
        need_grad = any(ctx.needs_input_grad[:7])
        y, hck, cfg = cross_scan_fwd(u, delta, A, B, C, D, delta_bias, h, w, save_states=need_grad, config=config)
        if need_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, hck)
            ctx.hw = (h, w)
            ctx.BT = cfg[1]
            ctx.bwd_config = bwd_config
        return y

    @staticmethod
    def backward(ctx, dy):
        u, delta, A, B, C, D, delta_bias, hck = ctx.saved_tensors
        h, w = ctx.hw
        du, ddelta, dA, dB, dC, dD, dbias = cross_scan_bwd(u, delta, A, B, C, D, delta_bias, dy, hck, h, w,
                                                           ctx.BT, ctx.bwd_config)
        return (du.to(u.dtype), ddelta.to(delta.dtype), dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
                dD.to(D.dtype), dbias.to(delta_bias.dtype), None, None, None, None)


def cross_scan_triton(u, delta, A, B, C, D, delta_bias, h, w, config=None, bwd_config=None):
    """Triton 4-direction selective scan, same signature, shapes and result as `scan_ref.cross_scan_ref`.

    u (S,Di,L), delta (S,K,Di,L), A (K*Di,N), B (S,K,N,L), C (S,G,K,N,L), D (K*Di,), delta_bias (K*Di,), all in grid
    order (L = h*w); inputs fp32/bf16/fp16. Returns y (S,G,Di,L) fp32, the four directions summed. `config`
    = (BD, BT, NL, num_warps) and `bwd_config` = (BD, NL, num_warps) pin the block sizes (default: tuned once per
    shape, see FWD_CONFIGS / BWD_CONFIGS).
    """
    return CrossScanFn.apply(u, delta, A, B, C, D, delta_bias, h, w, config, bwd_config)

"""Decoder scan as stored style states and one batched matmul ("states readout"), with its PyTorch reference.

In the ST-VSS decoder the recurrence reads only the style (u, Δ, B); the contents enter through C alone (spec §7.4):

    h_k[t] = exp(Δ_k[t] A_k) h_k[t-1] + Δ_k[t] B_k[t] u[t]          (direction k, its own step order)
    y_g[p] = Σ_k Σ_n C_g[k, n, p] · H[p, k, n] + Σ_k D_k · u[p]      (content g, grid position p)

where H[p, k] is direction k's state right after the step that visits grid position p. So the states are computed
once for all contents that share a style (`style_states`: the recurrence of each channel, scanned in P segments
at once as the v2 scan's segmented form is, each step's state stored in grid order), and the G readouts become, per grid position, one (G × K·N) @ (K·N × Di) product: a
batched matmul on the tensor cores, with the direction merge folded into its sum. The in-loop form (`cross_scan_v2`
with G readouts) does the same readouts as G·N FMAs per channel and step on the CUDA cores; its time grows with G.

Memory: H is L · K·N · Di values (bf16: 0.54 GB at 512², 4.2 GB at 1080p, per decoder layer), which is why the
caller uses this form only when it fits (`states_bytes`). The products are written position-major, (L, G, Di)
(`states_matmul`), and `merge_norm.norm_gate_pm` adds the skip term Σ_k D_k u (`skip_term`) and applies the block's
LayerNorm and gate to them. Speeds and the reasons for each choice: kernels/SCAN_NOTES.md ("Stored style states").
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .cross_scan_v2 import _pos, _softplus
from .scan_ref import K_DIRECTIONS, direction_indices


def states_bytes(L: int, Di: int, N: int, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of the stored states H (one style) for a token count L."""
    return L * K_DIRECTIONS * N * Di * torch.finfo(dtype).bits // 8


def style_states_ref(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                     delta_bias: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Reference: u (S, L, Di), delta (S, K, L, Di) raw Δ (grid order, channel-last), A (K*Di, N), B (S, K, N, L),
    delta_bias (K*Di,) -> H (S, L, K, N, Di) in fp32 (fp64 if u is): each direction's state after the step that
    visits each grid position."""
    S, L, Di = u.shape
    K, N = K_DIRECTIONS, A.shape[1]
    ct = torch.float64 if u.dtype == torch.float64 else torch.float32
    idx = direction_indices(h, w, u.device)                                        # (K, L): step -> grid position
    out = torch.zeros((S, L, K, N, Di), dtype=ct, device=u.device)
    Ak = A.to(ct).view(K, Di, N)
    for k in range(K):
        st = torch.zeros((S, Di, N), dtype=ct, device=u.device)
        for t in range(L):
            p = int(idx[k, t])
            dt = torch.nn.functional.softplus(delta[:, k, p].to(ct) + delta_bias.to(ct).view(K, Di)[k])   # (S, Di)
            dBu = (dt * u[:, p].to(ct))[..., None] * B[:, k, :, p].to(ct)[:, None, :]                      # (S, Di, N)
            st = torch.exp(dt[..., None] * Ak[k]) * st + dBu
            out[:, p, k] = st.transpose(1, 2)
    return out


def states_readout_ref(H: torch.Tensor, C: torch.Tensor, u: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Reference readout: H (S, L, K, N, Di), C (S, G, K, N, L), u (S, L, Di), D (K*Di,) -> y (S, G, L, Di) fp32
    (directions summed): y_g[p] = Σ_k,n C_g[k, n, p] H[p, k, n] + Σ_k D_k u[p]."""
    K = K_DIRECTIONS
    Di = u.shape[-1]
    y = torch.einsum("sgknl,slknd->sgld", C.to(H.dtype), H)
    return y + (u.to(H.dtype) * D.to(H.dtype).view(K, Di).sum(0))[:, None]


@triton.jit
def _loads(i, L, H, W, rev, col, u_base, dl_base, B_base, Di, offs_d, mask_d, offs_n, N: tl.constexpr):
    # step i's grid position and its u, raw delta (BD channels) and B (N states); clamped to the last step (a re-read
    # past the end is never used)
    p = _pos(tl.minimum(i, L - 1), L, H, W, rev, col)
    u = tl.load(u_base + p * Di + offs_d, mask=mask_d, other=0.0)
    d = tl.load(dl_base + p * Di + offs_d, mask=mask_d, other=0.0)
    b = tl.load(B_base + p * N + offs_n)
    return p, u, d, b


@triton.jit
def _step(hs, sdt, p, u, d, b, A2, bias, mask_d, st_base, st_off, Di, N: tl.constexpr, STORE: tl.constexpr):
    # one recurrence step; the state is then stored at the step's grid position (in st's dtype) unless this is a
    # segment's state pass (STORE = 0), which only sums the step's dt
    dt = tl.where(mask_d, _softplus(d.to(tl.float32) + bias), 0.0)
    hs = tl.exp2(dt[:, None] * A2) * hs + (dt * u.to(tl.float32))[:, None] * b.to(tl.float32)[None, :]
    if STORE:
        tl.store(st_base + p * (4 * N * Di) + st_off, hs.to(st_base.dtype.element_ty), mask=mask_d[:, None])
    return hs, sdt + dt


@triton.jit(do_not_specialize=["H", "W", "seg_len", "n_seg"])
def _states_kernel(u_ptr, dl_ptr, A_ptr, B_ptr, bias_ptr, st_ptr, hs_ptr, sdt_ptr, Di, L, H, W, seg_len, n_seg,
                   N: tl.constexpr, BD: tl.constexpr, SEG: tl.constexpr, STORE: tl.constexpr):
    # one program per (channel block, direction k, style s, segment j): the recurrence of BD channels along
    # direction k over the steps [j*seg_len, (j+1)*seg_len); after each step the (BD, N) state is stored at its grid
    # position: st (S, L, K, N, Di). One segment (SEG = 0) is one recurrence a channel: 128 one-warp programs at
    # Di = 1024 leave most of the GPU idle and each step costs the latency of its loads (issued 4 steps ahead: four
    # register slots, each refilled with the step 4 later as soon as it has been read, as cross_scan_v2's PF 4).
    # Segments give P times the programs for about twice the arithmetic:
    #   SEG = 1: state pass: from a zero state, store the segment's end state and its sum of dt (hs, sdt: (S, K, P,
    #            N, Di) and (S, K, P, Di)); nothing else is stored (STORE = 0).
    #   SEG = 2: store pass: first the true state before segment j, H_j = exp(A * sdt_{j-1}) * H_{j-1} + hs_{j-1}
    #            from H_0 = 0 (fixed order, j short steps: scan_ref.segment_start_states), then the segment's steps
    #            from it, storing every state.
    pid2 = tl.program_id(2)
    j = pid2 % n_seg
    s = (pid2 // n_seg).to(tl.int64)
    pid_d = tl.program_id(0)
    k = tl.program_id(1)
    i0 = j * seg_len
    i1 = tl.minimum(L, i0 + seg_len)
    offs_d = pid_d * BD + tl.arange(0, BD)
    mask_d = offs_d < Di
    offs_n = tl.arange(0, N)
    c = k * Di + offs_d
    A2 = tl.load(A_ptr + c[:, None] * N + offs_n[None, :], mask=mask_d[:, None], other=0.0).to(tl.float32)
    A2 = A2 * 1.4426950408889634
    bias = tl.load(bias_ptr + c, mask=mask_d, other=0.0).to(tl.float32)
    LD = tl.cast(Di, tl.int64) * L
    u_base = u_ptr + s * LD                                  # u: (S, L, Di)
    dl_base = dl_ptr + (s * 4 + k) * LD                      # delta: (S, K, L, Di)
    B_base = B_ptr + (s * 4 + k) * N * L                     # B: (S, K, L, N)
    st_base = st_ptr + s * LD * 4 * N + k * N * Di           # states: (S, L, K, N, Di)
    st_off = offs_n[None, :] * Di + offs_d[:, None]          # (BD, N)
    seg_base = (s * 4 + k) * n_seg                           # segment j of (s, k) in hs / sdt
    rev = k >= 2
    col = (k % 2) == 1
    hs = tl.zeros((BD, N), dtype=tl.float32)
    if SEG == 2:
        for jj in range(0, j):
            e = tl.load(sdt_ptr + (seg_base + jj) * Di + offs_d, mask=mask_d, other=0.0)
            hj = tl.load(hs_ptr + (seg_base + jj) * N * Di + st_off, mask=mask_d[:, None], other=0.0)
            hs = tl.exp2(e[:, None] * A2) * hs + hj
    sdt = tl.zeros((BD,), dtype=tl.float32)
    p0, u0, d0, b0 = _loads(i0, L, H, W, rev, col, u_base, dl_base, B_base, Di, offs_d, mask_d, offs_n, N)
    p1, u1, d1, b1 = _loads(i0 + 1, L, H, W, rev, col, u_base, dl_base, B_base, Di, offs_d, mask_d, offs_n, N)
    p2, u2, d2, b2 = _loads(i0 + 2, L, H, W, rev, col, u_base, dl_base, B_base, Di, offs_d, mask_d, offs_n, N)
    p3, u3, d3, b3 = _loads(i0 + 3, L, H, W, rev, col, u_base, dl_base, B_base, Di, offs_d, mask_d, offs_n, N)
    for i in range(i0, i1, 4):
        # step i is always inside the segment; steps i + 1 .. i + 3 are skipped past its end
        p, u, d, b = p0, u0, d0, b0
        p0, u0, d0, b0 = _loads(i + 4, L, H, W, rev, col, u_base, dl_base, B_base, Di, offs_d, mask_d, offs_n, N)
        hs, sdt = _step(hs, sdt, p, u, d, b, A2, bias, mask_d, st_base, st_off, Di, N, STORE)
        p, u, d, b = p1, u1, d1, b1
        p1, u1, d1, b1 = _loads(i + 5, L, H, W, rev, col, u_base, dl_base, B_base, Di, offs_d, mask_d, offs_n, N)
        if i + 1 < i1:
            hs, sdt = _step(hs, sdt, p, u, d, b, A2, bias, mask_d, st_base, st_off, Di, N, STORE)
        p, u, d, b = p2, u2, d2, b2
        p2, u2, d2, b2 = _loads(i + 6, L, H, W, rev, col, u_base, dl_base, B_base, Di, offs_d, mask_d, offs_n, N)
        if i + 2 < i1:
            hs, sdt = _step(hs, sdt, p, u, d, b, A2, bias, mask_d, st_base, st_off, Di, N, STORE)
        p, u, d, b = p3, u3, d3, b3
        p3, u3, d3, b3 = _loads(i + 7, L, H, W, rev, col, u_base, dl_base, B_base, Di, offs_d, mask_d, offs_n, N)
        if i + 3 < i1:
            hs, sdt = _step(hs, sdt, p, u, d, b, A2, bias, mask_d, st_base, st_off, Di, N, STORE)
    if SEG == 1:
        tl.store(hs_ptr + (seg_base + j) * N * Di + st_off, hs, mask=mask_d[:, None])
        tl.store(sdt_ptr + (seg_base + j) * Di + offs_d, sdt, mask=mask_d)


# Segments: enough programs to fill the GPU (the one-segment form runs S*K*Di/BD one-warp programs: 128 at Di = 1024),
# but at least MIN_SEG_STEPS steps each so that the state pass and the start-state sums stay small.
TARGET_PROGRAMS = 4096
MIN_SEG_STEPS = 64


def states_segments(S: int, L: int, Di: int, BD: int = 32) -> int:
    """How many segments `style_states` scans each direction in (env MAMBAST_STATES_SEGMENTS overrides; 1 = none)."""
    forced = os.environ.get("MAMBAST_STATES_SEGMENTS", "")
    if forced:
        return max(1, int(forced))
    base = S * K_DIRECTIONS * triton.cdiv(Di, BD)
    return max(1, min(TARGET_PROGRAMS // base, L // MIN_SEG_STEPS))


def style_states(u_cl: torch.Tensor, delta_cl: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 delta_bias: torch.Tensor, h: int, w: int, dtype: torch.dtype = torch.bfloat16,
                 BD: int = 32, num_warps: int = 1, segments: int | None = None) -> torch.Tensor:
    """The stored states (Triton): u_cl (S, L, Di), delta_cl (S, K, L, Di) raw Δ, A (K*Di, N), B (S, K, N, L),
    delta_bias (K*Di,) -> H (S, L, K, N, Di) in `dtype` (the state is kept in fp32 and rounded once when stored).
    segments: how many parts each direction's sequence is scanned in, in parallel (default `states_segments`)."""
    S, L, Di = u_cl.shape
    N = A.shape[1]
    assert L == h * w and delta_cl.shape == (S, K_DIRECTIONS, L, Di) and B.shape == (S, K_DIRECTIONS, N, L)
    u_cl, delta_cl, A, delta_bias = (x.contiguous() for x in (u_cl, delta_cl, A, delta_bias))
    Bt = B.transpose(-1, -2).contiguous()                                # (S, K, L, N): a step's N values adjacent
    out = torch.empty((S, L, K_DIRECTIONS, N, Di), device=u_cl.device, dtype=dtype)
    P = states_segments(S, L, Di, BD) if segments is None else max(1, segments)
    seg_len = triton.cdiv(L, P)
    n_seg = triton.cdiv(L, seg_len)
    grid = (triton.cdiv(Di, BD), K_DIRECTIONS, S * n_seg)
    if n_seg == 1:
        _states_kernel[grid](u_cl, delta_cl, A, Bt, delta_bias, out, out, out, Di, L, h, w, L, 1,
                             N=N, BD=BD, SEG=0, STORE=True, num_warps=num_warps)
        return out
    hs = torch.empty((S, K_DIRECTIONS, n_seg, N, Di), device=u_cl.device, dtype=torch.float32)
    sdt = torch.empty((S, K_DIRECTIONS, n_seg, Di), device=u_cl.device, dtype=torch.float32)
    for seg in (1, 2):
        _states_kernel[grid](u_cl, delta_cl, A, Bt, delta_bias, out, hs, sdt, Di, L, h, w, seg_len, n_seg,
                             N=N, BD=BD, SEG=seg, STORE=seg == 2, num_warps=num_warps)
    return out


def states_matmul(H: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """The contents' part of the readout, position-major: H (1, L, K, N, Di), C (1, G, K, N, L) -> (L, G, Di) in H's
    dtype (fp32 accumulation in the matmul): Σ_k,n C_g[k, n, p] H[p, k, n], directions summed."""
    return torch.bmm(*_mm_operands(H, C))


def skip_term(u_cl: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """The readout's skip term Σ_k D_k u, the same for every content: u_cl (1, L, Di), D (K*Di,) -> (L, Di) fp32."""
    Di = u_cl.shape[-1]
    return u_cl[0].float() * D.float().view(K_DIRECTIONS, Di).sum(0)


def states_readout_pm(H: torch.Tensor, C: torch.Tensor, u_cl: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """The readout of one style's states for G contents, position-major: H (1, L, K, N, Di), C (1, G, K, N, L),
    u_cl (1, L, Di), D (K*Di,) -> y (L, G, Di) in H's dtype, directions summed, the skip term Σ_k D_k u included.
    (The decoder's `scan_norm_gate` adds the skip term inside its epilogue instead: `norm_gate_pm(..., skip=)`.)"""
    Du = skip_term(u_cl, D).to(H.dtype)
    return torch.baddbmm(Du[:, None, :], *_mm_operands(H, C))


def _mm_operands(H: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _, L, K, N, Di = H.shape
    G = C.shape[1]
    return C[0].permute(3, 0, 1, 2).reshape(L, G, K * N).to(H.dtype), H[0].view(L, K * N, Di)

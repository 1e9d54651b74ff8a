"""Reference 4-direction ("cross") selective scan in plain PyTorch: the oracle for the Triton kernels.

Implements spec §3 (the recurrence) combined with §2.7 (the four scan orderings and their merge), in the
"one recurrence, G readouts" form of spec §7.4 that serves both the VSS encoders (G = 1, C from the same
stream) and the ST-VSS decoder (u, Δ, B from the style; C from G contents that share that style).

Everything is given in *grid order* (row-major token index r = i*w + j); direction k reads it in its own
order by index arithmetic:

    k = 0: t -> r(t)                 row-major
    k = 1: t -> column-major         (t = j*h + i)
    k = 2: reverse of k = 0
    k = 3: reverse of k = 1

For each direction k, channel d (flattened channel c = k*Di + d), state n and sequence step t:

    dt[c,t]  = softplus(delta[k,d,t] + delta_bias[c])
    h[c,n,t] = exp(dt[c,t] * A[c,n]) * h[c,n,t-1] + dt[c,t] * B[k,n,t] * u[d,t]
    y_g[c,t] = sum_n C[g,k,n,t] * h[c,n,t] + D[c] * u[d,t]

and the output is the sum of the four directions' y mapped back to grid order. The state is kept in fp32
(fp64 when any input is fp64, which the tests use as the oracle). Differentiable through autograd.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

K_DIRECTIONS = 4


def direction_indices(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(4, L) long tensor: row k holds, for each sequence step t, the grid (row-major) index it reads."""
    L = h * w
    t = torch.arange(L, device=device)
    row = t                                   # k=0: row-major
    col = (t % h) * w + (t // h)              # k=1: column-major, t = j*h + i  ->  r = i*w + j
    return torch.stack([row, col, row.flip(0), col.flip(0)])


def check_shapes(u, delta, A, B, C, D, delta_bias, h: int, w: int) -> tuple[int, int, int, int, int]:
    """Assert the channel-first contract of `cross_scan_ref` (shared by the kernels' launchers). Returns (S, Di, L, G, N)."""
    S, Di, L = u.shape
    K = K_DIRECTIONS
    G = C.shape[1]
    N = A.shape[1]
    assert L == h * w, f"L={L} does not match grid {h}x{w}"
    assert delta.shape == (S, K, Di, L), delta.shape
    assert A.shape == (K * Di, N), A.shape
    assert B.shape == (S, K, N, L), B.shape
    assert C.shape == (S, G, K, N, L), C.shape
    assert D.shape == (K * Di,) and delta_bias.shape == (K * Di,)
    return S, Di, L, G, N


def cross_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    delta_bias: torch.Tensor,
    h: int,
    w: int,
    delta_softplus: bool = True,
    chunk: int | None = None,
) -> torch.Tensor:
    """4-direction selective scan with G readouts per recurrence, directions merged in grid order.

    Args:
        u:     (S, Di, L)        scan input, grid order, L = h*w. S = number of recurrences (styles).
        delta: (S, K, Di, L)     raw Δ per direction (dt_proj output, bias *not* added), grid order.
        A:     (K*Di, N)         state matrix (negative reals, = -exp(A_logs)).
        B:     (S, K, N, L)      grid order.
        C:     (S, G, K, N, L)   grid order. G readouts share each recurrence (G = 1 in the encoders).
        D:     (K*Di,)           skip term.
        delta_bias: (K*Di,)      added to delta before the softplus.
        h, w:  the token grid.
        delta_softplus: apply softplus to delta + bias (always True in Mamba-ST).
        chunk: steps per vectorised chunk (only a speed/memory knob; the result does not depend on it). Default
            16 // S (at least 4): a chunk's (S, K, Di, T, N) tensors then stay small enough for the CPU's caches,
            which made the CPU engine 1.5–1.7× faster than chunks of 64 (BENCHMARKS.md, session 5).

    Returns:
        y: (S, G, Di, L) in fp32 (fp64 if any input is fp64), grid order, the four directions summed.
    """
    S, Di, L, G, N = check_shapes(u, delta, A, B, C, D, delta_bias, h, w)
    K = K_DIRECTIONS
    chunk = chunk or max(4, 16 // max(1, S))

    ct = torch.float64 if any(x.dtype == torch.float64 for x in (u, delta, A, B, C, D, delta_bias)) else torch.float32
    idx = direction_indices(h, w, u.device)                       # (K, L)

    # Materialise the four directions (the kernels avoid this; the reference reads like the spec).
    ud = u.to(ct)[:, None, :, :].expand(S, K, Di, L)
    ud = torch.gather(ud, 3, idx[None, :, None, :].expand(S, K, Di, L))           # (S, K, Di, L)
    dt = torch.gather(delta.to(ct), 3, idx[None, :, None, :].expand(S, K, Di, L))  # (S, K, Di, L)
    dt = dt + delta_bias.to(ct).view(1, K, Di, 1)
    if delta_softplus:
        dt = F.softplus(dt)
    Bd = torch.gather(B.to(ct), 3, idx[None, :, None, :].expand(S, K, N, L))      # (S, K, N, L)
    Cd = torch.gather(C.to(ct), 4, idx[None, None, :, None, :].expand(S, G, K, N, L))  # (S, G, K, N, L)
    Ak = A.to(ct).view(K, Di, N)

    # Step-major copies, so that each step's (S, K, Di, N) slice below is one contiguous block.
    dt_s = dt.permute(3, 0, 1, 2).contiguous()                                   # (L, S, K, Di)
    dtu_s = (dt * ud).permute(3, 0, 1, 2).contiguous()                           # (L, S, K, Di)
    B_s = Bd.permute(3, 0, 1, 2).contiguous()                                    # (L, S, K, N)
    # Without autograd the states are written over exp(dt A) in place (no allocation per step: 1.2-1.4x faster on
    # the CPU); with it, out of place. Same operations in the same order: the same bits either way.
    in_place = not (torch.is_grad_enabled() and any(x.requires_grad for x in (u, delta, A, B, C, D, delta_bias)))
    hstate = u.new_zeros((S, K, Di, N), dtype=ct)
    ys = []
    for t0 in range(0, L, chunk):
        t1 = min(L, t0 + chunk)
        dA = torch.exp(dt_s[t0:t1, ..., None] * Ak[None, None])                  # (T, S, K, Di, N): exp(dt A)
        dBu = dtu_s[t0:t1, ..., None] * B_s[t0:t1, :, :, None, :]                # (T, S, K, Di, N): dt u B
        hs = []
        for t in range(t1 - t0):                                                 # h_t = exp(dt A) h_{t-1} + dt u B
            hstate = dA[t].mul_(hstate).add_(dBu[t]) if in_place else dA[t] * hstate + dBu[t]
            hs.append(hstate)
        hs = dA if in_place else torch.stack(hs)                                 # (T, S, K, Di, N)
        ys.append(torch.einsum("tskdn,sgknt->sgkdt", hs, Cd[..., t0:t1]))       # y_g = sum_n C_g h: (S, G, K, Di, T)
    yd = torch.cat(ys, dim=-1)                                                   # (S, G, K, Di, L)
    yd = yd + (D.to(ct).view(1, 1, K, Di, 1) * ud[:, None])

    # Merge: scatter each direction back to grid order and sum (spec §2.7).
    y = torch.zeros((S, G, Di, L), dtype=ct, device=u.device)
    for k in range(K):
        y = y.index_add(3, idx[k], yd[:, :, k])
    return y


def segment_start_states(A: torch.Tensor, hs: torch.Tensor, sdt: torch.Tensor) -> torch.Tensor:
    """The segmented forward's combine step (cross_scan_v2 / v3, P > 1): segment j's true start state from the state
    pass's results, in a fixed order. hs (S, K, P, N, Di): each segment's end state scanned from zero; sdt (S, K, P,
    Di): its sum of dt; A (K*Di, N). H_0 = 0, H_j = exp(A * sdt_{j-1}) * H_{j-1} + hs_{j-1}."""
    S, K, P, N, Di = hs.shape
    h0 = torch.zeros_like(hs)
    An = A.float().view(K, Di, N).transpose(1, 2)                 # (K, N, Di)
    for j in range(1, P):
        decay = torch.exp(An[None] * sdt[:, :, j - 1, None, :])   # (S, K, N, Di)
        h0[:, :, j] = decay * h0[:, :, j - 1] + hs[:, :, j - 1]
    return h0

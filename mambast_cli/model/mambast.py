"""Mamba-ST (Botti et al., WACV 2025, arXiv 2409.10385), re-implemented from the spec, top to bottom.

References: ../shared/docs/mambast-spec.md §2 (data flow), §3 (scan), §4 (parameters, key layout), §7.4 (split forward).
Parameter names and shapes equal the official state dicts, so the three official files load strictly into
`model.embedding`, `model.mamba` and `model.cnn` (the official `decode` module).

Where we deliberately differ from the official code (each documented in README/MODEL.md):
- any H×W: inputs are reflect-padded to multiples of 8 and outputs cropped back; the (h, w) grid is threaded
  through every reshape (no sqrt(L));
- style and content of different sizes: the decoder consumes the style as a shuffled *bag* of tokens, so per
  block we draw L_content token indices from the style's L_style tokens (a permutation when the counts match,
  which is exactly the official behaviour; sampling without replacement when the style has more tokens; every
  token repeated as evenly as possible when it has fewer);
- permutations come from a torch.Generator seeded per (seed, block), not from the global CPU RNG;
- CAPE (content-aware positional embedding) only behind `use_cape` (off; spec §2.3).

Invariants: images are float (B, 3, H, W) in [0, 1] (no normalisation, spec §2.1); outputs are unclamped
(clamp only when saving, spec §2.12); token grids are kept as (B, h, w, C) channel-last in the Mamba part.
This module does no I/O and never prints.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from mambast_kernels import K_DIRECTIONS, block_norm, block_residual, conv_silu, scan_norm_gate

K = K_DIRECTIONS


@dataclass
class MambaSTConfig:
    d_model: int = 512          # token width (hard-coded 512 in the official code)
    d_state: int = 16           # SSM state size N (--d_state)
    expand: int = 2             # d_inner = expand * d_model
    dt_rank: int = 32           # ceil(d_model / 16)
    patch: int = 8              # non-overlapping patch embedding
    n_enc_layers: int = 3       # per encoder (content and style)
    n_dec_layers: int = 3
    d_conv: int = 3             # depthwise conv kernel
    ln_eps: float = 1e-5        # Mamba passes plain nn.LayerNorm (spec §1)
    drop_path: float = 0.1      # decoder SS2D branch, training only
    cnn_widths: tuple[int, int, int] = (256, 128, 64)  # CNN decoder widths after each upsampling stage
    use_cape: bool = False      # content-aware positional embedding (official flag --use_pos_embed); off
    cape_pool: int = 18

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cnn_widths"] = list(self.cnn_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MambaSTConfig":
        d = dict(d)
        if "cnn_widths" in d:
            d["cnn_widths"] = tuple(d["cnn_widths"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def tiny_config() -> MambaSTConfig:
    """A few-ten-thousand-parameter config for CPU tests (same structure, small widths)."""
    return MambaSTConfig(d_model=16, d_state=4, expand=2, dt_rank=4, cnn_widths=(8, 8, 8), drop_path=0.0)


# ----------------------------------------------------------------------------------------------------------------
# small pieces


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (timm's DropPath semantics)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


def pad_to_multiple(x: torch.Tensor, m: int, min_tokens: int = 2) -> torch.Tensor:
    """Reflect-pad (B, C, H, W) on the bottom/right to multiples of m, and to at least `min_tokens` patches per side
    (the CNN decoder's reflect pads need 2); replicate where a side is too small to reflect."""
    H, W = x.shape[-2:]
    ph = max(-(-H // m), min_tokens) * m - H
    pw = max(-(-W // m), min_tokens) * m - W
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if (ph < H and pw < W) else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class PatchEmbed(nn.Module):
    """Conv2d 3→d_model, kernel = stride = 8 (spec §2.2). Key layout: proj.weight, proj.bias."""

    def __init__(self, cfg: MambaSTConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.d_model, kernel_size=cfg.patch, stride=cfg.patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # (B, h, w, C)


# ----------------------------------------------------------------------------------------------------------------
# SS2D: the 4-direction selective-scan mixer, in "self" mode (encoders) and "cross" mode (ST-VSS decoder)


@dataclass
class StyleBlockTensors:
    """The content-independent inputs of one decoder block's scan (spec §7.3), grid order."""

    u: torch.Tensor      # (S, L, Di)       s' = SiLU(dwconv(in_style_proj(shuffled style))), channel-last
    delta: torch.Tensor  # (S, K, L, Di)    dt_proj(low-rank Δ), bias not added, channel-last
    B: torch.Tensor      # (S, K, N, L)


class SS2D(nn.Module):
    def __init__(self, cfg: MambaSTConfig, cross: bool):
        super().__init__()
        C, Di, N, R = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank
        self.cross, self.d_inner, self.d_state, self.dt_rank = cross, Di, N, R
        self.in_proj = nn.Linear(C, 2 * Di, bias=False)
        self.in_style_proj = nn.Linear(C, Di, bias=False)  # dead in the encoders, kept for strict loading
        self.conv2d = nn.Conv2d(Di, Di, cfg.d_conv, padding=(cfg.d_conv - 1) // 2, groups=Di, bias=True)
        if cross:
            self.style_proj_weight = nn.Parameter(torch.empty(K, R + N, Di))  # rows: Δ (R), B (N)
            self.x_proj_weight = nn.Parameter(torch.empty(K, N, Di))          # rows: C
        else:
            self.x_proj_weight = nn.Parameter(torch.empty(K, R + 2 * N, Di))  # rows: Δ (R), B (N), C (N)
        self.dt_projs_weight = nn.Parameter(torch.empty(K, Di, R))
        self.dt_projs_bias = nn.Parameter(torch.empty(K, Di))
        self.A_logs = nn.Parameter(torch.empty(K * Di, N))
        self.Ds = nn.Parameter(torch.empty(K * Di))
        self.out_norm = nn.LayerNorm(Di, eps=cfg.ln_eps)
        self.out_proj = nn.Linear(Di, C, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
        """Mamba/VMamba inits: S4D-real A, dt bias = softplus⁻¹ of a log-uniform dt, D = 1."""
        Di, N, R = self.d_inner, self.d_state, self.dt_rank
        for m in (self.in_proj, self.in_style_proj, self.out_proj, self.conv2d):
            m.reset_parameters()
        for name in ("x_proj_weight", "style_proj_weight"):
            if hasattr(self, name):
                nn.init.uniform_(getattr(self, name), -Di ** -0.5, Di ** -0.5)
        nn.init.uniform_(self.dt_projs_weight, -R ** -0.5, R ** -0.5)
        dt = torch.exp(torch.rand(K, Di) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=1e-4)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.A_logs.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(K * Di, 1))
        self.Ds.fill_(1.0)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, w, Di) -> SiLU(dwconv) as (B, L, Di), grid order, channel-last (one fused pass on the GPU)."""
        return conv_silu(x, self.conv2d)

    def _proj(self, u: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Per-direction token projection: u (B, L, Di), weight (K, c, Di) -> (B, K, c, L)."""
        Kw, c, Di = weight.shape
        out = u @ weight.to(u.dtype).reshape(Kw * c, Di).t()        # (B, L, K*c)
        return out.view(u.shape[0], -1, Kw, c).permute(0, 2, 3, 1).contiguous()  # (B, K, c, L)

    def _delta(self, dts: torch.Tensor) -> torch.Tensor:
        """dt_proj per direction: dts (B, K, R, L) -> Δ_raw (B, K, L, Di), channel-last."""
        return torch.matmul(dts.transpose(2, 3), self.dt_projs_weight.to(dts.dtype).transpose(1, 2)).contiguous()

    def _scan_and_merge(self, u, delta, Bm, Cm, h: int, w: int, z: torch.Tensor) -> torch.Tensor:
        A = -torch.exp(self.A_logs.float())                         # (K*Di, N)
        # cross-scan (S, G, L, Di), directions merged, then out_norm(y) * silu(z): one fused pass on the GPU at
        # inference (MAMBAST_FUSED_MERGE=0 turns it off), else the PyTorch ops
        y = scan_norm_gate(u, delta, A, Bm, Cm, self.Ds.float(), self.dt_projs_bias.float().view(-1), h, w, z,
                           self.out_norm.weight, self.out_norm.bias, self.out_norm.eps)   # (B, L, Di)
        return self.out_proj(y.reshape(z.shape))                    # (B, h, w, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Self mode (encoders), spec §2.6. x: (B, h, w, C) already LayerNormed."""
        Bsz, h, w, _ = x.shape
        R, N = self.dt_rank, self.d_state
        xs, z = self.in_proj(x).chunk(2, dim=-1)                    # 2 × (B, h, w, Di)
        u = self._conv(xs)                                          # (B, L, Di)
        x_dbl = self._proj(u, self.x_proj_weight)                   # (B, K, R+2N, L)
        dts, Bm, Cm = torch.split(x_dbl, [R, N, N], dim=2)
        delta = self._delta(dts)                                    # (B, K, L, Di)
        return self._scan_and_merge(u, delta, Bm.contiguous(), Cm.unsqueeze(1).contiguous(), h, w, z)

    def style_side(self, s: torch.Tensor) -> StyleBlockTensors:
        """Cross mode, style half (content-independent): s is the shuffled style grid (S, h, w, C), not normalised."""
        R, N = self.dt_rank, self.d_state
        u = self._conv(self.in_style_proj(s))                       # (S, L, Di), shared dwconv
        s_dbl = self._proj(u, self.style_proj_weight)               # (S, K, R+N, L)
        dts, Bm = torch.split(s_dbl, [R, N], dim=2)
        delta = self._delta(dts)                                    # (S, K, L, Di)
        return StyleBlockTensors(u=u, delta=delta, B=Bm.contiguous())

    def forward_cross(self, x: torch.Tensor, st: StyleBlockTensors) -> torch.Tensor:
        """Cross mode, spec §2.8. x: content grid (B, h, w, C), LayerNormed; B = S * G contents, G per style."""
        Bsz, h, w, _ = x.shape
        S = st.u.shape[0]
        assert Bsz % S == 0, f"content batch {Bsz} is not a multiple of the style batch {S}"
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        xc = self._conv(xs)                                         # (B, L, Di), shared dwconv
        Cm = self._proj(xc, self.x_proj_weight)                     # (B, K, N, L)
        Cm = Cm.view(S, Bsz // S, K, self.d_state, h * w)           # (S, G, K, N, L)
        return self._scan_and_merge(st.u, st.delta, st.B, Cm, h, w, z)


# ----------------------------------------------------------------------------------------------------------------
# blocks and stacks (official names: layers.{i}.{skip_scale, skip_scale2, ln_1, self_attention, norm})


class VSSBlock(nn.Module):
    def __init__(self, cfg: MambaSTConfig, cross: bool, drop_path: float = 0.0):
        super().__init__()
        C = cfg.d_model
        self.skip_scale = nn.Parameter(torch.ones(C))
        self.skip_scale2 = nn.Parameter(torch.ones(C))  # unused by the official forward; kept for strict loading
        self.ln_1 = nn.LayerNorm(C, eps=cfg.ln_eps)
        self.self_attention = SS2D(cfg, cross=cross)
        self.norm = nn.LayerNorm(C, eps=cfg.ln_eps)
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder block (spec §2.5): E_l = LN_norm(skip ⊙ X̃ + SS2D(LN_1(X̃))) + E_{l-1}, X̃ = E + P."""
        xt = x if pos is None else x + pos
        y = self.self_attention(block_norm(xt, self.ln_1))
        return block_residual(xt, y, self.skip_scale, self.norm, res=None if pos is None else x)

    def forward_cross(self, z: torch.Tensor, st: StyleBlockTensors) -> torch.Tensor:
        """Decoder block (spec §2.8): Z_l = LN_norm(skip ⊙ Z + DropPath(SS2D×(LN_1(Z), S̃))) + Z."""
        y = self.self_attention.forward_cross(block_norm(z, self.ln_1), st)
        return block_residual(z, drop_path(y, self.drop_path, self.training), self.skip_scale, self.norm)


class Encoder(nn.Module):
    def __init__(self, cfg: MambaSTConfig):
        super().__init__()
        self.layers = nn.ModuleList([VSSBlock(cfg, cross=False) for _ in range(cfg.n_enc_layers)])

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, pos)
        return x


class Decoder(nn.Module):
    def __init__(self, cfg: MambaSTConfig):
        super().__init__()
        self.layers = nn.ModuleList([VSSBlock(cfg, cross=True, drop_path=cfg.drop_path) for _ in range(cfg.n_dec_layers)])
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)

    def forward(self, z: torch.Tensor, style_blocks: list[StyleBlockTensors]) -> torch.Tensor:
        for layer, st in zip(self.layers, style_blocks):
            z = layer.forward_cross(z, st)
        return self.norm(z)


class MambaCore(nn.Module):
    """Holds what the official `mamba_iter_*.pth` holds: encoder_c, encoder_s, decoder, new_ps."""

    def __init__(self, cfg: MambaSTConfig):
        super().__init__()
        self.encoder_c = Encoder(cfg)
        self.encoder_s = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.new_ps = nn.Conv2d(cfg.d_model, cfg.d_model, 1)  # CAPE 1×1 conv (used only with use_cape)
        self.cape_pool = cfg.cape_pool

    def cape(self, content_tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Content-aware positional embedding (spec §2.3): pool to 18², 1×1 conv, bilinear to `size`. (B, h, w, C)."""
        x = F.adaptive_avg_pool2d(content_tokens.permute(0, 3, 1, 2), self.cape_pool)
        x = F.interpolate(self.new_ps(x), size=size, mode="bilinear", align_corners=False)
        return x.permute(0, 2, 3, 1)


def cnn_decoder(cfg: MambaSTConfig) -> nn.Sequential:
    """AdaIN/StyTR-2 decoder (spec §2.11); indices match the official `decoder_iter_*.pth` keys."""
    c0, (c1, c2, c3) = cfg.d_model, cfg.cnn_widths

    def conv(i: int, o: int, relu: bool = True) -> list[nn.Module]:
        return [nn.ReflectionPad2d(1), nn.Conv2d(i, o, 3)] + ([nn.ReLU()] if relu else [])

    up = lambda: nn.Upsample(scale_factor=2, mode="nearest")  # noqa: E731
    return nn.Sequential(
        *conv(c0, c1), up(),                                        # 0-3
        *conv(c1, c1), *conv(c1, c1), *conv(c1, c1), *conv(c1, c2), up(),  # 4-16
        *conv(c2, c2), *conv(c2, c3), up(),                         # 17-23
        *conv(c3, c3), *conv(c3, 3, relu=False),                    # 24-28
    )


# ----------------------------------------------------------------------------------------------------------------
# the split forward (spec §7.4): encode_style / encode_content / decode


@dataclass
class ContentState:
    """What the decoder needs from the contents: the encoder_c output on the padded grid."""

    tokens: torch.Tensor          # (B, h, w, C)
    size: tuple[int, int]         # original (H, W) to crop back to
    grid: tuple[int, int]         # (h, w)
    embed: torch.Tensor | None = None  # patch tokens (needed only with CAPE)


@dataclass
class StyleState:
    """Everything content-independent for a batch of S styles on one content grid (spec §7.3)."""

    memory: torch.Tensor                  # (S, Ls, C) encoder_s output, row-major tokens
    style_grid: tuple[int, int]           # the style's own (hs, ws)
    grid: tuple[int, int]                 # the content grid these block tensors were laid out for
    seed: int | None
    indices: list[torch.Tensor]           # per decoder block: (L,) style-token index for each content token
    blocks: list[StyleBlockTensors] = field(default_factory=list)

    def for_grid(self, model: "MambaST", grid: tuple[int, int]) -> "StyleState":
        """The same style (same seed) re-laid for another content grid."""
        if tuple(grid) == tuple(self.grid):
            return self
        if self.seed is None:
            raise ValueError("a StyleState built from an explicit generator cannot be re-laid; pass seed=")
        return model.prepare_style(self.memory, self.style_grid, grid, seed=self.seed)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Flat tensor dict (for safetensors); shapes/grids/seed are encoded as small int tensors."""
        d: dict[str, torch.Tensor] = {
            "memory": self.memory,
            "meta": torch.tensor([*self.style_grid, *self.grid, -1 if self.seed is None else self.seed], dtype=torch.int64),
        }
        for i, (idx, b) in enumerate(zip(self.indices, self.blocks)):
            d[f"b{i}.indices"] = idx
            d[f"b{i}.u"], d[f"b{i}.delta"], d[f"b{i}.B"] = b.u, b.delta, b.B
        return {k: v.detach().contiguous() for k, v in d.items()}

    @classmethod
    def from_tensors(cls, d: dict[str, torch.Tensor]) -> "StyleState":
        meta = d["meta"].tolist()
        n = sum(1 for k in d if k.endswith(".indices"))
        return cls(
            memory=d["memory"], style_grid=(meta[0], meta[1]), grid=(meta[2], meta[3]),
            seed=None if meta[4] < 0 else meta[4],
            indices=[d[f"b{i}.indices"] for i in range(n)],
            blocks=[StyleBlockTensors(u=d[f"b{i}.u"], delta=d[f"b{i}.delta"], B=d[f"b{i}.B"]) for i in range(n)],
        )

    def to(self, device=None, dtype=None) -> "StyleState":
        f = lambda t: t.to(device=device, dtype=dtype if (dtype is not None and t.is_floating_point()) else t.dtype)  # noqa: E731
        return StyleState(f(self.memory), self.style_grid, self.grid, self.seed, [i.to(device) for i in self.indices],
                          [StyleBlockTensors(f(b.u), f(b.delta), f(b.B)) for b in self.blocks])


def style_token_indices(n_style: int, n_content: int, generator: torch.Generator) -> torch.Tensor:
    """Draw n_content indices into a bag of n_style tokens: a permutation when equal (the official shuffle),
    a random subset when the style has more tokens, every token repeated as evenly as possible when fewer."""
    if n_style >= n_content:
        return torch.randperm(n_style, generator=generator)[:n_content]
    reps = n_content // n_style
    rest = torch.randperm(n_style, generator=generator)[: n_content - reps * n_style]
    bag = torch.cat([torch.arange(n_style).repeat(reps), rest])
    return bag[torch.randperm(n_content, generator=generator)]


def block_generator(seed: int, block: int) -> torch.Generator:
    """The permutation RNG for (seed, decoder block): CPU generator, so CPU and GPU runs draw the same indices."""
    g = torch.Generator(device="cpu")
    g.manual_seed((int(seed) * 1_000_003 + 7919 * (block + 1)) & 0x7FFF_FFFF_FFFF_FFFF)
    return g


class MambaST(nn.Module):
    """embedding → {encoder_c, encoder_s} → ST-VSS decoder → final LN → CNN decoder."""

    def __init__(self, cfg: MambaSTConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or MambaSTConfig()
        self.embedding = PatchEmbed(cfg)
        self.mamba = MambaCore(cfg)
        self.cnn = cnn_decoder(cfg)  # the official `decode` module (decoder_iter_*.pth); `decode` is the method below

    # -- initialisation ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self, official: bool = False) -> None:
        """Mamba inits (default), or the official code's behaviour: xavier_uniform_ over every >1-D parameter of the
        encoders and decoder, which also overwrites A_logs and dt bias (spec §4.2)."""
        for m in self.modules():
            if isinstance(m, SS2D):
                m.reset_parameters()
        if official:
            for mod in (self.mamba.encoder_c, self.mamba.encoder_s, self.mamba.decoder):
                for p in mod.parameters():
                    if p.dim() > 1:
                        nn.init.xavier_uniform_(p)

    # -- the split forward ------------------------------------------------------------------------------------
    def token_grid(self, H: int, W: int) -> tuple[int, int]:
        """The (h, w) token grid an H×W picture gets (after `pad_to_multiple`), without running anything."""
        p = self.cfg.patch
        return max(-(-int(H) // p), 2), max(-(-int(W) // p), 2)

    def _embed(self, img: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        H, W = img.shape[-2:]
        x = self.embedding(pad_to_multiple(img, self.cfg.patch))   # (B, h, w, C)
        return x, (H, W), (x.shape[1], x.shape[2])

    def encode_content(self, content: torch.Tensor) -> ContentState:
        """content (B, 3, H, W) in [0, 1] → encoder_c output on the padded token grid."""
        e, size, grid = self._embed(content)
        pos = self.mamba.cape(e, grid) if self.cfg.use_cape else None
        return ContentState(tokens=self.mamba.encoder_c(e, pos), size=size, grid=grid, embed=e if self.cfg.use_cape else None)

    def encode_style(self, style: torch.Tensor, grid: tuple[int, int] | None = None, seed: int | None = 0,
                     generator: torch.Generator | None = None) -> StyleState:
        """style (S, 3, Hs, Ws) in [0, 1] → StyleState laid out for the content token `grid` (default: its own)."""
        e, _, sgrid = self._embed(style)
        memory = self.mamba.encoder_s(e).flatten(1, 2)              # (S, Ls, C)
        return self.prepare_style(memory, sgrid, tuple(grid or sgrid), seed=seed, generator=generator)

    def prepare_style(self, memory: torch.Tensor, style_grid: tuple[int, int], grid: tuple[int, int],
                      seed: int | None = 0, generator: torch.Generator | None = None) -> StyleState:
        """Shuffle (resample) the style tokens per decoder block and compute each block's style-side scan inputs."""
        h, w = grid
        S, Ls, C = memory.shape
        indices, blocks = [], []
        for i, layer in enumerate(self.mamba.decoder.layers):
            g = generator if generator is not None else block_generator(0 if seed is None else seed, i)
            idx = style_token_indices(Ls, h * w, g).to(memory.device)
            shuffled = memory[:, idx].view(S, h, w, C)               # (S, h, w, C), official: M[π] viewed row-major
            indices.append(idx)
            blocks.append(layer.self_attention.style_side(shuffled))
        return StyleState(memory, tuple(style_grid), (h, w), None if generator is not None else seed, indices, blocks)

    def _cape_style_blocks(self, cs: ContentState, ss: StyleState) -> list[StyleBlockTensors]:
        """use_cape only: the official decoder adds the content's CAPE to the style memory before the shuffle (spec §2.3)."""
        assert cs.embed is not None and cs.tokens.shape[0] == ss.memory.shape[0], "CAPE needs one style per content"
        pos = self.mamba.cape(cs.embed, ss.style_grid).flatten(1, 2)   # (B, Ls, C)
        mem = ss.memory + pos
        h, w = ss.grid
        return [layer.self_attention.style_side(mem[:, idx].view(mem.shape[0], h, w, -1))
                for layer, idx in zip(self.mamba.decoder.layers, ss.indices)]

    def decode_features(self, cs: ContentState, ss: StyleState) -> torch.Tensor:
        """Decoder features (B, C, h, w). Content b is paired with style b // (B // S)."""
        if tuple(ss.grid) != tuple(cs.grid):
            ss = ss.for_grid(self, cs.grid)
        blocks = self._cape_style_blocks(cs, ss) if self.cfg.use_cape else ss.blocks
        S, Bsz = blocks[0].u.shape[0], cs.tokens.shape[0]
        if S < Bsz and not self._share_recurrence():
            G = Bsz // S    # one recurrence per content: same maths, faster with the current GPU kernel (BENCHMARKS.md)
            blocks = [StyleBlockTensors(b.u.repeat_interleave(G, 0), b.delta.repeat_interleave(G, 0),
                                        b.B.repeat_interleave(G, 0)) for b in blocks]
        z = self.mamba.decoder(cs.tokens, blocks)                    # (B, h, w, C)
        return z.permute(0, 3, 1, 2)                                 # (B, C, h, w)

    #: contents sharing a style share one scan recurrence (G readouts); False = one recurrence per content (the same
    #: maths). None = auto: on (env MAMBAST_SHARE_RECURRENCE=0 turns it off). On an H100 with the grouped readout
    #: kernel it is 3 % faster at 512² and equal at 256², with 39 % less peak memory (BENCHMARKS.md, session 2);
    #: on the CPU reference scan, where the sequential loop dominates, it is much faster.
    share_style_recurrence: bool | None = None

    def _share_recurrence(self) -> bool:
        if self.share_style_recurrence is not None:
            return self.share_style_recurrence
        return os.environ.get("MAMBAST_SHARE_RECURRENCE", "1") != "0"

    def render(self, feats: torch.Tensor, cs: ContentState | tuple[int, int]) -> torch.Tensor:
        """CNN decoder, then crop to the content's original size. (B, 3, H, W), unclamped."""
        H, W = cs.size if isinstance(cs, ContentState) else cs
        return self.cnn(feats)[..., :H, :W]

    def decode(self, cs: ContentState, ss: StyleState) -> torch.Tensor:
        """decode(content_state, style_state) of spec §7.4: (B, 3, H, W), unclamped."""
        return self.render(self.decode_features(cs, ss), cs)

    def forward(self, content: torch.Tensor, style: torch.Tensor, seed: int | None = 0,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """One stylised image per (content, style) pair: encode both (style on the content's grid), decode."""
        cs = self.encode_content(content)
        ss = self.encode_style(style, grid=cs.grid, seed=seed, generator=generator)
        return self.decode(cs, ss)

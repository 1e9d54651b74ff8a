"""Mamba-ST training losses (spec §5) over a pluggable frozen loss network.

Owns the loss definitions and their tap/weight configuration. Does not run the style-transfer model, read
files or print. Statistics are computed in fp32 even when the features come out of bf16 autocast.

Paper recipe (VGG-19): content = Σ_{relu4_1, relu5_1} MSE(norm F(Ics), norm F(Ic)); style = Σ_5 layers
[MSE(μ) + MSE(σ)]; identity1 = MSE(Icc, Ic) + MSE(Iss, Is); identity2 = Σ_5 layers [MSE(F(Icc), F(Ic)) +
MSE(F(Iss), F(Is))]; total = 7·content + 10·style + 70·identity1 + 1·identity2. μ/σ are per-sample,
per-channel spatial statistics with σ = √(unbiased var + 1e-5).

EfficientNet-Lite0 defaults (training notes): style on block0–5 and block7 (strides 2–16), content at block10
(stride 16), identity2 on the union of those taps; each style layer's term is divided by the mean square of
the style image's own statistics (detached) so that every layer weighs about the same ("style_norm"), and
identity2 likewise by the target features' mean square ("id2_norm").
An optional colour term matches per-channel pixel mean/std of Ics to Is; an optional patch-grid term penalises the
residual's power at the 8-px patch period (`artifacts.grid_penalty`) in Ics and Icc.
"""
from __future__ import annotations

from dataclasses import dataclass, field, asdict
from typing import Any

import torch
import torch.nn.functional as F

from mambast_cli.train.artifacts import grid_penalty
from mambast_cli.train.lossnet import VGG_TAPS, FrozenFeatures

EFFNET_STYLE_TAPS: tuple[str, ...] = ("block0", "block1", "block2", "block3", "block4", "block5", "block7")
EFFNET_CONTENT_TAPS: tuple[str, ...] = ("block10",)
VGG_CONTENT_TAPS: tuple[str, ...] = ("relu4_1", "relu5_1")


@dataclass
class LossConfig:
    """Which taps and weights the losses use. `None` taps mean: the loss network's defaults.

    Attributes:
        content_taps / style_taps / identity_taps: tap names of the loss network (identity defaults to the union).
        content_weight, style_weight, id1_weight, id2_weight: the paper's 7 / 10 / 70 / 1.
        style_norm: divide each style layer's term by the style statistics' mean square (detached).
        id2_norm: divide each identity-2 layer's MSE by the target features' mean square (detached), so raw
            feature scale does not decide the balance (default: on for EfficientNet, off for VGG = the paper).
        color_weight: weight of the pixel-space per-channel mean/std term (0 = off, the paper).
        grid_weight: weight of the patch-grid term (0 = off, the paper): `artifacts.grid_penalty` of the stylised
            output and of the content's identity pass, each against the content (the 8-px mesh MODEL.md describes).
    """

    content_taps: tuple[str, ...] | None = None
    style_taps: tuple[str, ...] | None = None
    identity_taps: tuple[str, ...] | None = None
    content_weight: float = 7.0
    style_weight: float = 10.0
    id1_weight: float = 70.0
    id2_weight: float = 1.0
    style_norm: bool | None = None
    id2_norm: bool | None = None
    color_weight: float = 0.0
    grid_weight: float = 0.0

    def resolved(self, net: FrozenFeatures) -> "LossConfig":
        """A copy with the network's default taps and normalisation filled in."""
        vgg = net.name == "vgg19"
        c = self.content_taps or (VGG_CONTENT_TAPS if vgg else EFFNET_CONTENT_TAPS)
        s = self.style_taps or (VGG_TAPS if vgg else EFFNET_STYLE_TAPS)
        i = self.identity_taps or (VGG_TAPS if vgg else tuple(dict.fromkeys(s + c)))
        norm = (not vgg) if self.style_norm is None else self.style_norm
        id2n = (not vgg) if self.id2_norm is None else self.id2_norm
        return LossConfig(tuple(c), tuple(s), tuple(i), self.content_weight, self.style_weight, self.id1_weight,
                          self.id2_weight, norm, id2n, self.color_weight, self.grid_weight)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (for checkpoints and logs)."""
        return asdict(self)


def mean_std(f: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel spatial mean and std (unbiased var + eps), in fp32.

    Args:
        f: (B, C, H, W) features.
    Returns:
        (mu, sigma), each (B, C).
    """
    f = f.float().flatten(2)
    mu = f.mean(-1)
    sigma = (f.var(-1, unbiased=True) + eps).sqrt()
    return mu, sigma


def normalise(f: torch.Tensor) -> torch.Tensor:
    """Instance-normalise features per sample and channel (spec §5 `norm`), in fp32. Args: f (B,C,H,W)."""
    mu, sigma = mean_std(f)
    return (f.float() - mu[..., None, None]) / sigma[..., None, None]


def style_term(fo: torch.Tensor, fs: torch.Tensor, norm: bool) -> torch.Tensor:
    """MSE of mean and std between output and style features at one tap (optionally scale-normalised)."""
    mo, so = mean_std(fo)
    ms, ss = mean_std(fs)
    t = F.mse_loss(mo, ms) + F.mse_loss(so, ss)
    if norm:
        t = t / ((ms.square().mean() + ss.square().mean()).detach() + 1e-6)
    return t


def feature_mse(fo: torch.Tensor, ft: torch.Tensor, norm: bool) -> torch.Tensor:
    """MSE between features (fp32), optionally divided by the target's mean square (detached)."""
    t = F.mse_loss(fo.float(), ft.float())
    if norm:
        t = t / (ft.float().square().mean().detach() + 1e-6)
    return t


def color_term(out: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """Pixel-space per-channel mean/std MSE between the output and the style image (both (B,3,H,W))."""
    return style_term(out, style, norm=False)


class StyleLosses(torch.nn.Module):
    """All Mamba-ST losses for one training step, over a frozen loss network.

    Args:
        net: a frozen FrozenFeatures network (its taps are set here to what the losses need).
        cfg: LossConfig; defaults filled from the network.
    """

    def __init__(self, net: FrozenFeatures, cfg: LossConfig | None = None) -> None:
        super().__init__()
        self.cfg = (cfg or LossConfig()).resolved(net)
        self.net = net
        cfg_ = self.cfg
        assert cfg_.content_taps and cfg_.style_taps and cfg_.identity_taps
        self.all_taps = tuple(dict.fromkeys(cfg_.style_taps + cfg_.content_taps + cfg_.identity_taps))
        net.set_taps(self.all_taps)  # type: ignore[attr-defined]

    def feats(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss-network features of images in [0, 1], keyed by tap name."""
        return dict(zip(self.all_taps, self.net(x)))

    def content_style(self, out: torch.Tensor, content: torch.Tensor, style: torch.Tensor,
                      f_c: dict[str, torch.Tensor] | None = None,
                      f_s: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Content and style losses of a stylised output (no identity terms); used for training and validation.

        Args:
            out, content, style: (B, 3, H, W) images in [0, 1] (out may be unclamped).
            f_c, f_s: precomputed features of content / style (optional).
        Returns:
            dict with "content", "style" and (if color_weight > 0) "color" scalars.
        """
        c = self.cfg
        f_o = self.feats(out)
        f_c = f_c if f_c is not None else self.feats(content)
        f_s = f_s if f_s is not None else self.feats(style)
        lc = sum(F.mse_loss(normalise(f_o[t]), normalise(f_c[t])) for t in c.content_taps or ())
        ls = sum(style_term(f_o[t], f_s[t], bool(c.style_norm)) for t in c.style_taps or ())
        res = {"content": torch.as_tensor(lc), "style": torch.as_tensor(ls)}
        if c.color_weight > 0:
            res["color"] = color_term(out, style)
        return res

    def forward(self, ics: torch.Tensor, icc: torch.Tensor, iss: torch.Tensor,
                content: torch.Tensor, style: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every loss term and the weighted total for one step.

        Args:
            ics: stylised outputs (B,3,H,W); icc / iss: identity reconstructions of content / style.
            content, style: the inputs (B,3,H,W) in [0,1].
        Returns:
            dict with "total", "content", "style", "id1", "id2" (and "color", "grid" when enabled); fp32 scalars.
        """
        c = self.cfg
        B = content.shape[0]
        with torch.no_grad():
            f_in = self.feats(torch.cat([content, style]))
        f_c = {k: v[:B] for k, v in f_in.items()}
        f_s = {k: v[B:] for k, v in f_in.items()}
        f_out = self.feats(torch.cat([ics, icc, iss]))
        f_o = {k: v[:B] for k, v in f_out.items()}
        f_cc = {k: v[B:2 * B] for k, v in f_out.items()}
        f_ss = {k: v[2 * B:] for k, v in f_out.items()}
        lc = sum(F.mse_loss(normalise(f_o[t]), normalise(f_c[t])) for t in c.content_taps or ())
        ls = sum(style_term(f_o[t], f_s[t], bool(c.style_norm)) for t in c.style_taps or ())
        id1 = F.mse_loss(icc.float(), content.float()) + F.mse_loss(iss.float(), style.float())
        id2 = sum(feature_mse(f_cc[t], f_c[t], bool(c.id2_norm)) + feature_mse(f_ss[t], f_s[t], bool(c.id2_norm))
                  for t in c.identity_taps or ())
        res = {"content": torch.as_tensor(lc), "style": torch.as_tensor(ls), "id1": id1, "id2": torch.as_tensor(id2)}
        total = (c.content_weight * res["content"] + c.style_weight * res["style"] + c.id1_weight * id1
                 + c.id2_weight * res["id2"])
        if c.color_weight > 0:
            res["color"] = color_term(ics, style)
            total = total + c.color_weight * res["color"]
        if c.grid_weight > 0:
            res["grid"] = grid_penalty(ics, content) + grid_penalty(icc, content)
            total = total + c.grid_weight * res["grid"]
        res["total"] = total
        return res


def color_transfer(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """Baseline: give each content channel the style's per-channel mean and std (clamped to [0, 1]).

    Args:
        content, style: (B, 3, H, W) in [0, 1].
    Returns:
        (B, 3, H, W) in [0, 1].
    """
    mc, sc = mean_std(content)
    ms, ss = mean_std(style)
    out = (content.float() - mc[..., None, None]) / sc[..., None, None] * ss[..., None, None] + ms[..., None, None]
    return out.clamp(0, 1).to(content.dtype)

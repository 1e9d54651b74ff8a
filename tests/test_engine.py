"""Engine tests on CPU with a tiny random model: shapes, determinism, alpha, colour, caching, tiling, errors.

The GPU test at the end (bf16 vs fp32 PSNR) runs only with `-m gpu` on a CUDA machine.
"""
from __future__ import annotations

import stat

import pytest
import torch

from mambast_cli.engine import Engine, StyleHandle
from mambast_cli.engine.engine import DEFAULT_STYLE_SIZE, psnr, resolve_device, resolve_precision
from mambast_cli.engine.render import TiledCNN, cnn_geometry, luma, preserve_color, tiled_cnn
from mambast_cli.errors import DeviceError, InputError, UsageError, WeightsError
from mambast_cli.model import MambaST, MambaSTConfig, tiny_config


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """2 shared CPU cores: one intra-op thread is far faster than two fighting other processes."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model() -> MambaST:
    torch.manual_seed(0)
    m = MambaST(tiny_config()).eval()
    # Give the CNN decoder outputs a usable range (random inits sit near 0, which clamping would hide).
    with torch.no_grad():
        m.cnn[-1].bias.fill_(0.5)
    return m


def _imgs(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g)


def _engine(model: MambaST, tmp_path, **kw) -> Engine:
    kw.setdefault("cache_dir", tmp_path / "cache")
    return Engine(model=model, device="cpu", **kw)


def test_shapes_non_square_and_odd_sizes(model, tmp_path):
    eng = _engine(model, tmp_path)
    h = eng.encode_style(_imgs(3, 23, 41), key="s1")
    assert isinstance(h, StyleHandle)
    for shape in [(2, 3, 37, 51), (1, 3, 9, 70), (3, 3, 16, 16), (1, 3, 9, 9), (1, 3, 5, 30), (1, 3, 1, 1)]:
        out = eng.stylize(_imgs(*shape, seed=1), h)
        assert out.shape == shape and out.dtype == torch.float32 and out.device.type == "cpu"
        assert out.min() >= 0 and out.max() <= 1
    assert eng.stats["pairs"] == 9 and eng.stats["style_encodes"] == 1
    with pytest.raises(ValueError):
        eng.stylize(_imgs(3, 16, 16), h)


def test_matches_model_reference_path(model, tmp_path):
    """Engine (style encoded once on its own grid, laid out per content grid) == the model's plain forward."""
    eng = _engine(model, tmp_path, disk_cache=False)
    style = _imgs(3, 30, 44)
    x = _imgs(2, 3, 37, 51, seed=2)
    out = eng.stylize(x, eng.encode_style(style))
    with torch.inference_mode():
        ref = model(x, style[None].expand(2, -1, -1, -1).contiguous(), seed=0).clamp(0, 1)
    print("max diff", (out - ref).abs().max().item())
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_deterministic_bytes_for_same_seed(model, tmp_path):
    style, x = _imgs(3, 24, 24), _imgs(2, 3, 40, 24, seed=3)
    a = _engine(model, tmp_path, seed=7, disk_cache=False)
    b = _engine(model, tmp_path, seed=7, disk_cache=False)
    c = _engine(model, tmp_path, seed=8, disk_cache=False)
    oa = a.stylize(x, a.encode_style(style))
    ob = b.stylize(x, b.encode_style(style))
    oc = c.stylize(x, c.encode_style(style))
    assert oa.numpy().tobytes() == ob.numpy().tobytes()
    assert not torch.equal(oa, oc)


def test_alpha_zero_is_identity_path_and_alpha_blends_features(model, tmp_path):
    eng = _engine(model, tmp_path, disk_cache=False)
    x = _imgs(2, 3, 32, 40, seed=4)
    h1, h2 = eng.encode_style(_imgs(3, 24, 24, seed=5)), eng.encode_style(_imgs(3, 24, 24, seed=6))
    o0 = eng.stylize(x, h1, alpha=0.0)
    assert torch.equal(o0, eng.stylize(x, h2, alpha=0.0))       # the style plays no part
    with torch.inference_mode():
        cs = model.encode_content(x)
        fid = model.decode_features(cs, model.encode_style(x, grid=cs.grid, seed=0))
        fst = model.decode_features(cs, model.prepare_style(h1.memory, h1.style_grid, cs.grid, seed=0))
        ident = model.render(fid, cs).clamp(0, 1)
        half = model.render(torch.lerp(fid, fst, 0.5), cs).clamp(0, 1)
    torch.testing.assert_close(o0, ident, rtol=0, atol=1e-6)
    torch.testing.assert_close(eng.stylize(x, h1, alpha=0.5), half, rtol=0, atol=1e-6)
    assert eng.stats["identity_passes"] == 3
    with pytest.raises(UsageError):
        eng.stylize(x, h1, alpha=1.5)


def test_preserve_color_keeps_content_chroma_and_output_luma():
    sty, con = _imgs(2, 3, 8, 9, seed=1), _imgs(2, 3, 8, 9, seed=2)
    out = preserve_color(sty, con)
    torch.testing.assert_close(luma(out), luma(sty))
    torch.testing.assert_close(out - luma(out), con - luma(con))   # chroma = colour minus grey level


def test_preserve_color_in_engine(model, tmp_path):
    eng = _engine(model, tmp_path, disk_cache=False)
    x = _imgs(1, 3, 24, 32, seed=9)
    h = eng.encode_style(_imgs(3, 24, 24))
    plain, kept = eng.stylize(x, h), eng.stylize(x, h, preserve_color=True)
    assert kept.shape == plain.shape and 0 <= kept.min() and kept.max() <= 1
    assert not torch.equal(plain, kept)


def test_style_memory_hit_and_style_size(model, tmp_path):
    eng = _engine(model, tmp_path, disk_cache=False)
    img = _imgs(3, 30, 50)
    h = eng.encode_style(img, key="k")
    assert eng.encode_style(img, key="k") is h
    assert eng.stats["style_cache_hits_memory"] == 1 and eng.stats["style_encodes"] == 1
    assert eng.encode_style(img, key="k", style_size=16).size == (16, 27)
    big = torch.rand(3, DEFAULT_STYLE_SIZE + 40, DEFAULT_STYLE_SIZE + 100)
    assert min(eng.encode_style(big, key="big").size) == DEFAULT_STYLE_SIZE   # default: capped, not upscaled
    assert eng.encode_style(_imgs(3, 20, 20), key="small").size == (20, 20)


def test_disk_cache_hit_on_second_engine(model, tmp_path):
    style, x = _imgs(3, 26, 34), _imgs(2, 3, 24, 40, seed=11)
    first = _engine(model, tmp_path)
    o1 = first.stylize(x, first.encode_style(style, key="file-sha"))
    assert first.stats["style_encodes"] == 1 and first.stats["style_cache_writes"] == 1
    second = _engine(model, tmp_path)
    h = second.encode_style(style, key="file-sha")
    o2 = second.stylize(x, h)
    assert h.source == "disk"
    assert second.stats["style_encodes"] == 0 and second.stats["style_cache_hits_disk"] == 1
    assert torch.equal(o1, o2)


def test_corrupt_cache_entry_is_recomputed_and_replaced(model, tmp_path):
    style, x = _imgs(3, 26, 34), _imgs(1, 3, 24, 40, seed=12)
    first = _engine(model, tmp_path)
    o1 = first.stylize(x, first.encode_style(style, key="c"))
    (entry,) = list((tmp_path / "cache" / "styles").glob("*.safetensors"))
    data = bytearray(entry.read_bytes())
    data[-5] ^= 0xFF                                      # flip a tensor byte
    entry.write_bytes(bytes(data))
    second = _engine(model, tmp_path)
    o2 = second.stylize(x, second.encode_style(style, key="c"))
    s = second.stats
    assert s["style_cache_corrupt"] == 1 and s["style_encodes"] == 1 and s["style_cache_hits_disk"] == 0
    assert torch.equal(o1, o2)
    third = _engine(model, tmp_path)                      # the entry was rewritten, valid again
    third.encode_style(style, key="c")
    assert third.stats["style_cache_hits_disk"] == 1


def test_truncated_cache_entry_is_a_miss(model, tmp_path):
    style = _imgs(3, 16, 16)
    _engine(model, tmp_path).encode_style(style, key="t")
    (entry,) = list((tmp_path / "cache" / "styles").glob("*.safetensors"))
    entry.write_bytes(entry.read_bytes()[:20])
    eng = _engine(model, tmp_path)
    eng.encode_style(style, key="t")
    assert eng.stats["style_encodes"] == 1 and eng.stats["style_cache_corrupt"] == 1


def test_engine_lru_eviction_at_tiny_cap(model, tmp_path):
    probe = _engine(model, tmp_path / "probe")
    probe.encode_style(_imgs(3, 16, 16), key="p")
    (entry,) = list((tmp_path / "probe" / "cache" / "styles").glob("*.safetensors"))
    cap = int(entry.stat().st_size * 2.5)                  # room for two entries
    eng = _engine(model, tmp_path, cache_max_bytes=cap)
    for i, k in enumerate(["a", "b", "c"]):
        eng.encode_style(_imgs(3, 16, 16, seed=20 + i), key=k)
    files = list((tmp_path / "cache" / "styles").glob("*.safetensors"))
    assert len(files) == 2 and eng.stats["style_cache_evictions_disk"] == 1


def test_cache_dir_is_private(model, tmp_path):
    root = tmp_path / "fresh" / "mambast"
    eng = Engine(model=model, device="cpu", cache_dir=root)
    eng.encode_style(_imgs(3, 16, 16), key="perm")
    for d in (root, root / "styles"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for f in (root / "styles").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_env_cache_dir_is_used(model, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMBAST_CACHE_DIR", str(tmp_path / "envcache"))
    eng = Engine(model=model, device="cpu")
    eng.encode_style(_imgs(3, 16, 16), key="env")
    assert len(list((tmp_path / "envcache" / "styles").glob("*.safetensors"))) == 1


def test_weights_none_without_bundled_weights_raises(monkeypatch):
    import mambast_cli.model.weights as W

    monkeypatch.setattr(W, "default_weights_path", lambda: None)
    with pytest.raises(WeightsError) as e:
        Engine(weights=None, device="cpu")
    assert str(e.value) == "no trained weights are bundled yet"
    assert e.value.hint == "pass --weights FILE (see README: official checkpoints)"


def test_weights_file_loads_and_ids(model, tmp_path):
    from mambast_cli.model.weights import save_weights

    path = tmp_path / "w.safetensors"
    digest = save_weights(path, model, source="test")
    eng = Engine(weights=path, device="cpu", disk_cache=False)
    info = eng.info()
    assert info["weights_id"] == digest and info["weights_path"] == str(path)
    assert info["precision"] == "fp32" and info["scan_backend"] == "ref" and info["device"] == "cpu"
    assert {"torch", "triton", "mambast", "device_name"} <= set(info)


def test_device_and_precision_parsing(monkeypatch):
    assert resolve_device("cpu").type == "cpu"
    assert resolve_precision("auto", torch.device("cpu")) == torch.float32
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(UsageError):
        resolve_device("gpu")
    with pytest.raises(UsageError):
        resolve_precision("fp8", torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(DeviceError):
        resolve_device("cuda:0")


def test_max_batch_cpu_is_small(model, tmp_path):
    eng = _engine(model, tmp_path, disk_cache=False)
    assert eng.max_batch(256, 256) == 4 and eng.max_batch(512, 512) == 2 and eng.max_batch(3000, 4000) == 1


def test_layout_lru_in_memory_gives_same_results(model, tmp_path):
    x1, x2 = _imgs(1, 3, 16, 24, seed=1), _imgs(1, 3, 32, 16, seed=2)
    roomy = _engine(model, tmp_path, disk_cache=False)
    tight = _engine(model, tmp_path, disk_cache=False, style_memory_bytes=1)
    hr, ht = roomy.encode_style(_imgs(3, 20, 20)), tight.encode_style(_imgs(3, 20, 20))
    for x in (x1, x2, x1):
        assert torch.equal(roomy.stylize(x, hr), tight.stylize(x, ht))
    assert tight.stats["style_layout_evictions"] >= 2 and roomy.stats["style_layout_evictions"] == 0


def test_oom_splits_the_batch(model, tmp_path, monkeypatch):
    eng = _engine(model, tmp_path, disk_cache=False)
    h = eng.encode_style(_imgs(3, 16, 16))
    x = _imgs(4, 3, 16, 16, seed=3)
    expected = eng.stylize(x, h)
    real = eng._run

    def flaky(chunk, *a, **k):
        if chunk.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(chunk, *a, **k)

    monkeypatch.setattr(eng, "_run", flaky)
    torch.testing.assert_close(eng.stylize(x, h), expected, rtol=0, atol=1e-6)
    assert eng.stats["oom_retries"] == 2


@pytest.mark.parametrize("alpha,keep", [(1.0, False), (0.6, True)])
def test_stylize_many_gives_stylize_bytes_and_encodes_contents_once(model, tmp_path, monkeypatch, alpha, keep):
    eng = _engine(model, tmp_path, disk_cache=False)
    hs = [eng.encode_style(_imgs(3, 20 + 4 * k, 24, seed=10 + k)) for k in range(3)]
    x = _imgs(2, 3, 24, 40, seed=4)
    expected = [eng.stylize(x, h, alpha=alpha, preserve_color=keep) for h in hs]
    calls = []
    real = eng._encode_content
    monkeypatch.setattr(eng, "_encode_content", lambda t: calls.append(t.shape[0]) or real(t))
    pairs = eng.stats["pairs"]
    got = list(eng.stylize_many(x, hs, alpha=alpha, preserve_color=keep))
    assert len(got) == 3 and calls == [2]                  # the content side ran once for three styles
    for g, e in zip(got, expected):
        assert torch.equal(g, e)                           # the same bytes as one stylize call per style
    assert eng.stats["pairs"] == pairs + 6


def test_stylize_many_falls_back_to_stylize_on_oom(model, tmp_path, monkeypatch):
    eng = _engine(model, tmp_path, disk_cache=False)
    hs = [eng.encode_style(_imgs(3, 16, 16, seed=20 + k)) for k in range(3)]
    x = _imgs(2, 3, 16, 16, seed=5)
    expected = [eng.stylize(x, h) for h in hs]
    real = eng._decode_shared
    n = []

    def flaky(shared, style, *a):
        n.append(1)
        if len(n) == 2:                                    # the second style runs out of memory
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(shared, style, *a)

    monkeypatch.setattr(eng, "_decode_shared", flaky)
    got = list(eng.stylize_many(x, hs))
    assert len(n) == 2 and eng.stats["oom_retries"] == 1   # styles 2 and 3 by stylize
    for g, e in zip(got, expected):
        assert torch.equal(g, e)
    with pytest.raises(UsageError):
        list(eng.stylize_many(x, hs, alpha=2.0))


# ---------------------------------------------------------------------------------------------------------------
# tiling


def test_halo_of_the_official_cnn_decoder():
    from mambast_cli.model.mambast import cnn_decoder

    g = cnn_geometry(cnn_decoder(MambaSTConfig()))
    assert (g.scale, g.halo) == (8, 4)       # 30 output pixels of reach → 4 feature tokens


def test_tiled_cnn_equals_untiled(model):
    cnn, geo = model.cnn, cnn_geometry(model.cnn)
    feats = torch.randn(1, model.cfg.d_model, 9, 11, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = cnn(feats)
        for tile in (2, 5, 12):
            tiled = tiled_cnn(cnn, feats, tile, geo)
            print("tile", tile, "max diff", (tiled - full).abs().max().item())
            torch.testing.assert_close(tiled, full, rtol=0, atol=1e-6)
        no_halo = tiled_cnn(cnn, feats, 3, type(geo)((geo.scale, 0)))
    assert (no_halo - full).abs().max() > 1e-4      # the halo is what makes it exact


def test_engine_tiled_render_equals_untiled(model, tmp_path):
    x = _imgs(1, 3, 150, 190, seed=5)
    plain = _engine(model, tmp_path, disk_cache=False)
    tiny_budget = _engine(model, tmp_path, disk_cache=False, render_pixels=128 * 128)
    a = plain.stylize(x, plain.encode_style(_imgs(3, 24, 24)))
    b = tiny_budget.stylize(x, tiny_budget.encode_style(_imgs(3, 24, 24)))
    assert plain.stats["tiled_renders"] == 0 and tiny_budget.stats["tiled_renders"] == 1
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_render_budget_stays_under_32bit_index_limit(model, tmp_path, monkeypatch):
    """PyTorch's reflection-pad / upsample kernels refuse tensors of 2**31 elements (a batch of 1080p frames hit it
    on an H100): the render budget is capped so no CNN tensor gets there, whatever render_pixels says."""
    from mambast_cli.engine import engine as engine_mod
    from mambast_cli.model.mambast import MambaSTConfig

    cap = engine_mod.index_safe_pixels(MambaSTConfig())
    assert cap * 64 * 1.05 < 2**31 and cap > 16 * 1024 * 1024          # official widths: 64 channels at full size
    big = _engine(model, tmp_path, disk_cache=False, render_pixels=10**12)
    assert big._render_budget() == engine_mod.index_safe_pixels(model.cfg)
    # with a tiny limit the engine tiles, and the result is the untiled one
    x = _imgs(2, 3, 64, 80, seed=7)
    plain = _engine(model, tmp_path, disk_cache=False)
    a = plain.stylize(x, plain.encode_style(_imgs(3, 24, 24)))
    monkeypatch.setattr(engine_mod, "_INDEX_LIMIT", 40 * 48 * max(model.cfg.cnn_widths[-1], 1) * 2)
    capped = _engine(model, tmp_path, disk_cache=False)
    b = capped.stylize(x, capped.encode_style(_imgs(3, 24, 24)))
    assert capped.stats["tiled_renders"] >= 1
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_tiled_module_splits_batches_before_tiling(model):
    feats = torch.randn(3, model.cfg.d_model, 4, 4)
    t = TiledCNN(model.cnn, max_pixels=32 * 32)
    with torch.inference_mode():
        torch.testing.assert_close(t(feats), model.cnn(feats), rtol=0, atol=1e-6)
    assert t.tiled_calls == 0


# ---------------------------------------------------------------------------------------------------------------
# GPU only: bf16 fast path against the fp32 reference path


@pytest.mark.gpu
def test_bf16_vs_fp32_psnr_gpu(tmp_path):
    """Measures (prints) the bf16-vs-fp32 PSNR at 512² with a full-size random model; asserts a loose floor."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    torch.manual_seed(0)
    m = MambaST(MambaSTConfig()).eval()
    x, style = _imgs(2, 3, 512, 512, seed=1), _imgs(3, 512, 512, seed=2)
    outs = {}
    for p in ("fp32", "bf16"):
        eng = Engine(model=m, device="cuda", precision=p, disk_cache=False)
        outs[p] = eng.stylize(x, eng.encode_style(style))
    value = psnr(outs["fp32"], outs["bf16"])
    print(f"bf16 vs fp32 PSNR at 512²: {value:.2f} dB")
    assert value > 30.0


@pytest.mark.gpu
def test_gpu_fp32_engine_matches_model_and_tiles_exactly():
    """On CUDA: the fp32 engine equals the model's own forward; a forced tiny render budget gives the same image."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    torch.manual_seed(0)
    m = MambaST(MambaSTConfig()).eval()
    x, style = _imgs(2, 3, 200, 328, seed=3), _imgs(3, 256, 256, seed=4)
    eng = Engine(model=m, device="cuda", precision="fp32", disk_cache=False, deterministic=True)
    out = eng.stylize(x, eng.encode_style(style))
    with torch.inference_mode():
        ref = m(x.cuda(), style[None].expand(2, -1, -1, -1).cuda(), seed=0).clamp(0, 1).cpu()
    print("engine vs model max diff", (out - ref).abs().max().item())
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)
    tiled = Engine(model=m, device="cuda", precision="fp32", disk_cache=False, deterministic=True,
                   render_pixels=160 * 160)
    out_t = tiled.stylize(x, tiled.encode_style(style))
    assert tiled.stats["tiled_renders"] >= 1
    print("tiled vs untiled max diff", (out - out_t).abs().max().item())
    torch.testing.assert_close(out_t, out, rtol=0, atol=1e-5)


def test_channels_last_decoder_gives_the_same_pictures(model, tmp_path, monkeypatch):
    """The NHWC CNN decoder (forced on the CPU, PyTorch pad reference) gives the plain module's pictures, also tiled;
    auto leaves it off on the CPU and the fp32 path."""
    x = _imgs(2, 3, 40, 56, seed=11)
    style = _imgs(3, 24, 24)
    plain = _engine(model, tmp_path, disk_cache=False)
    assert plain.channels_last is False and plain.info()["channels_last"] is False
    nhwc = _engine(model, tmp_path, disk_cache=False, channels_last=True)
    assert nhwc.channels_last is True
    a = plain.stylize(x, plain.encode_style(style))
    b = nhwc.stylize(x, nhwc.encode_style(style))
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    tiled = _engine(model, tmp_path, disk_cache=False, channels_last=True, render_pixels=24 * 24)
    c = tiled.stylize(x, tiled.encode_style(style))
    assert tiled.stats["tiled_renders"] >= 1
    torch.testing.assert_close(c, a, rtol=0, atol=1e-5)


@pytest.mark.gpu
def test_cuda_graphs_give_the_eager_bytes_gpu(monkeypatch):
    """On CUDA (bf16): the second batch of a shape is captured and later ones replayed; the pictures equal the eager
    engine's bit for bit, also after a style change (the static style inputs are refreshed)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    torch.manual_seed(0)
    m = MambaST(MambaSTConfig()).eval()
    x = _imgs(4, 3, 256, 320, seed=3)
    styles = [_imgs(3, 256, 256, seed=4), _imgs(3, 256, 256, seed=5)]
    monkeypatch.setenv("MAMBAST_CUDA_GRAPHS", "0")
    eager = Engine(model=m, device="cuda", disk_cache=False)
    ref = [eager.stylize(x, eager.encode_style(s)) for s in styles]
    monkeypatch.delenv("MAMBAST_CUDA_GRAPHS")
    eng = Engine(model=m, device="cuda", disk_cache=False)
    hs = [eng.encode_style(s) for s in styles]
    outs = [eng.stylize(x, hs[i % 2]) for i in range(5)]        # eager, capture + replay, replay, replay, replay
    st = eng.stats
    print("graph stats", {k: v for k, v in st.items() if k.startswith("graph_")})
    assert st["graph_captures"] == 1 and st["graph_replays"] == 4 and st["graph_capture_failures"] == 0
    for i, o in enumerate(outs):
        assert torch.equal(o, ref[i % 2]), i


def test_max_graph_batch_keeps_a_batch_in_one_render_call(model, tmp_path):
    """The largest batch that can run as one CUDA graph: its CNN output must fit one render call (the video job picks
    it, e.g. 14 rather than 16 1080p frames). Graph bookkeeping is faked here: the CPU has no graphs."""
    eng = Engine(model=model, device="cpu", cache_dir=tmp_path)
    assert eng.max_graph_batch(100, 200) == 0                      # no graphs on the CPU
    eng._graphs = object()                                         # type: ignore[assignment]
    px = 13 * 25 * eng.geometry.scale ** 2                         # 100×200 → a 13×25 token grid, padded output
    assert eng.max_graph_batch(100, 200) == eng._render_budget() // px > 1
    eng.graph_max_pixels = px - 1
    assert eng.max_graph_batch(100, 200) == 0                      # pictures above the graph limit: never

"""Channels-last pad + ReLU + nearest upsampling (Triton interpreter on CPU) and the NHWC CNN decoder built on it."""
from __future__ import annotations

import os

import pytest
import torch

from mambast_kernels.pad_nhwc import pad_relu_up_ref

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
needs_triton = pytest.mark.skipif(not (_INTERPRET or torch.cuda.is_available()),
                                  reason="needs CUDA or TRITON_INTERPRET=1 (set before import)")
DEVICE = "cuda" if (torch.cuda.is_available() and not _INTERPRET) else "cpu"


def test_reference_is_relu_upsample_pad_in_channels_last():
    x = torch.tensor([[[[1.0, -2.0], [-3.0, 4.0]]]])          # (1, 1, 2, 2)
    out = pad_relu_up_ref(x, relu=True, scale=2)
    assert out.shape == (1, 1, 6, 6) and out.is_contiguous(memory_format=torch.channels_last)
    # ReLU → [[1, 0], [0, 4]], ×2 nearest → 4×4 blocks, reflect by one: row 0 mirrors row 2 (= upsampled row 1)
    up = torch.tensor([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 4, 4], [0, 0, 4, 4]])
    expect = torch.nn.functional.pad(up[None, None], (1, 1, 1, 1), mode="reflect")
    assert torch.equal(out, expect)


@needs_triton
@pytest.mark.parametrize("B,C,H,W,relu,scale,dtype,layout", [
    (2, 5, 3, 4, True, 2, torch.float32, "cl"),
    (1, 130, 2, 3, False, 1, torch.bfloat16, "nchw"),     # C over one channel block, masked tail
    (3, 64, 5, 7, True, 1, torch.float32, "nchw"),
    (1, 8, 1, 1, True, 2, torch.float32, "cl"),           # 1×1 upsampled to 2×2: the smallest that reflects
    (2, 12, 9, 2, False, 2, torch.bfloat16, "perm"),      # a permuted (B, h, w, C) view, as the decoder emits
    (2, 16, 3, 4, True, 2, torch.bfloat16, "cl"),         # bf16 ReLU (the interpreter once compared raw bits)
])
def test_kernel_is_bit_identical_to_reference(B, C, H, W, relu, scale, dtype, layout):
    from mambast_kernels.pad_nhwc import pad_relu_up

    x = torch.randn(B, C, H, W, device=DEVICE).to(dtype)
    if layout == "cl":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "perm":
        x = torch.randn(B, H, W, C, device=DEVICE).to(dtype).permute(0, 3, 1, 2)
    out = pad_relu_up(x, relu=relu, scale=scale)
    ref = pad_relu_up_ref(x, relu=relu, scale=scale)
    assert out.shape == (B, C, H * scale + 2, W * scale + 2) and out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, ref)


@needs_triton
def _same_bits_or_interpreter_rounding(out: torch.Tensor, expect: torch.Tensor) -> None:
    """Equal bits on CUDA; under the interpreter a bf16 result may be 1 ulp off, as its fp32 → bf16 cast truncates
    where the GPU rounds to nearest even (as PyTorch does)."""
    if DEVICE == "cuda" or out.dtype == torch.float32:
        assert torch.equal(out, expect)
    else:
        torch.testing.assert_close(out, expect, rtol=2 ** -7, atol=0)


@needs_triton
@pytest.mark.parametrize("C,relu,scale,dtype", [(5, True, 2, torch.float32), (130, True, 1, torch.bfloat16),
                                                (12, False, 2, torch.bfloat16)])
def test_kernel_adds_the_bias_like_pytorch(C, relu, scale, dtype):
    """The previous convolution's bias, added in the pass: the same bits as PyTorch adding it to the conv output
    (what F.conv2d with a bias does after cuDNN) followed by the pass without it."""
    from mambast_kernels.pad_nhwc import pad_relu_up

    x = torch.randn(2, 3, 4, C, device=DEVICE).to(dtype).permute(0, 3, 1, 2)
    bias = torch.randn(C, device=DEVICE).to(dtype)
    out = pad_relu_up(x, relu=relu, scale=scale, bias=bias)
    _same_bits_or_interpreter_rounding(out, pad_relu_up(x + bias.view(1, -1, 1, 1), relu=relu, scale=scale))
    _same_bits_or_interpreter_rounding(out, pad_relu_up_ref(x, relu=relu, scale=scale, bias=bias))
    with pytest.raises(ValueError, match="bias"):
        pad_relu_up(x, bias=bias[:-1])


def test_kernel_refuses_what_cannot_reflect():
    from mambast_kernels.pad_nhwc import pad_relu_up

    with pytest.raises(ValueError, match="2×2"):
        pad_relu_up(torch.zeros(1, 4, 1, 3, device=DEVICE), scale=1)


@pytest.mark.parametrize("backend", ["ref", pytest.param("triton", marks=needs_triton)])
def test_nhwc_decoder_matches_the_sequential_module(backend):
    from mambast_cli.engine.cnn_nhwc import NHWCDecoder
    from mambast_cli.model import MambaST, tiny_config

    torch.manual_seed(0)
    m = MambaST(tiny_config()).eval().to(DEVICE)
    feats = torch.randn(2, 5, 3, m.cfg.d_model, device=DEVICE).permute(0, 3, 1, 2)   # (B, C, h, w) view
    dec = NHWCDecoder(m.cnn, torch.float32, backend=backend)
    with torch.no_grad():
        ref = m.cnn(feats)
        out = dec(feats)
    assert out.shape == ref.shape == (2, 3, 40, 24)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["ref", pytest.param("triton", marks=needs_triton)])
def test_nhwc_decoder_bias_folding(backend):
    """Each bias but the last, added by the next pad pass: on CUDA the bits of the convolutions with their biases
    (PyTorch adds a cuDNN convolution's bias in a pass of its own, in the output dtype); on the CPU, where oneDNN
    adds it inside the convolution before rounding, close to them, and not the default there."""
    import torch.nn.functional as F

    from mambast_cli.engine.cnn_nhwc import NHWCDecoder
    from mambast_cli.model import MambaST, tiny_config

    torch.manual_seed(1)
    m = MambaST(tiny_config()).eval().to(DEVICE)
    for p in m.cnn.parameters():
        p.data.normal_(0, 0.3)                       # biases big enough to matter
    assert NHWCDecoder(m.cnn, torch.float32, backend=backend).fold_bias == (backend == "triton")
    feats = torch.randn(2, m.cfg.d_model, 3, 4, device=DEVICE)
    # bf16 only on CUDA: on the CPU its rounding differs with the bias inside or outside the convolution
    for dtype in (torch.float32, torch.bfloat16) if DEVICE == "cuda" else (torch.float32,):
        dec = NHWCDecoder(m.cnn, dtype, backend=backend, fold_bias=True)
        x = feats.to(dtype)
        for st in dec.steps:                          # unfolded: each conv with its own bias
            x = pad_relu_up_ref(x, relu=st.relu_in, scale=st.scale_in)
            x = F.conv2d(x, st.weight, st.bias)
        with torch.no_grad():
            out = dec(feats)
        if DEVICE == "cuda":
            assert torch.equal(out, x)
        else:
            torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-4)


def test_nhwc_decoder_refuses_other_layer_patterns():
    from mambast_cli.engine.cnn_nhwc import NHWCDecoder

    nn = torch.nn
    for bad in (nn.Sequential(nn.Conv2d(4, 3, 3, padding=1)),                         # no explicit pad
                nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(4, 3, 3), nn.Upsample(scale_factor=2)),  # ends upsampled
                nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(4, 4, 3), nn.Sigmoid())):
        with pytest.raises(ValueError):
            NHWCDecoder(bad, torch.float32)

"""Fixtures shared by the kernel tests."""
from __future__ import annotations

import os

import pytest
import torch

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
DEVICE = "cuda" if (torch.cuda.is_available() and not _INTERPRET) else "cpu"


@pytest.fixture
def tiny_model_vs_reference(monkeypatch):
    """``run(env, module, name) -> (rel, calls)``: the tiny model (2 contents 24×40 on 1 style 32×32, seed 3) through
    the PyTorch reference scan, then through the Triton scan with the environment `env` (a value None unsets it);
    `rel` is the relative difference of the two outputs and `calls` how many times the Triton run called
    ``module.name`` (the reference run never reaches the fused paths)."""
    def run(env: dict[str, str | None], module, name: str) -> tuple[float, int]:
        from mambast_cli.model import MambaST, tiny_config

        calls = []
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or real(*a, **k))
        torch.manual_seed(0)
        model = MambaST(tiny_config()).eval().to(DEVICE)
        c, s = torch.rand(2, 3, 24, 40, device=DEVICE), torch.rand(1, 3, 32, 32, device=DEVICE)
        with torch.no_grad():
            monkeypatch.setenv("MAMBAST_SCAN", "ref")
            ref = model(c, s, seed=3)
            monkeypatch.setenv("MAMBAST_SCAN", "triton")
            for k, v in env.items():
                if v is None:
                    monkeypatch.delenv(k, raising=False)
                else:
                    monkeypatch.setenv(k, v)
            out = model(c, s, seed=3)
        return ((out - ref).norm() / ref.norm()).item(), len(calls)

    return run

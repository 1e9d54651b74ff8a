"""Tests for mambast_cli.ray: Ray Data actor pools on a local Ray instance (2 CPUs) with a tiny random model.

Skipped when ray is not installed. The cluster tests share one local Ray instance (starting it takes seconds).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from mambast_cli.pipeline import RunOptions, plan_jobs

OPTS = RunOptions(size=0, max_side=0, decode_workers=1, write_workers=1, fsync=False)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mambast_cli.model import MambaST, tiny_config
    from mambast_cli.model.weights import save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(path, MambaST(tiny_config()), source="test: tiny random")
    return path


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("MAMBAST_CACHE_DIR")
    os.environ["MAMBAST_CACHE_DIR"] = str(cache)          # inherited by the local Ray workers
    os.environ.pop("MAMBAST_FAKE_ENGINE", None)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("MAMBAST_CACHE_DIR", None)
        else:
            os.environ["MAMBAST_CACHE_DIR"] = old


def test_shared_style_payload_rebuilds_the_same_handle(tmp_path: Path, tiny_weights: Path, make_image: Any) -> None:
    """What travels through the object store gives the actor the driver's style, with no style encoder run."""
    from mambast_cli.engine import Engine
    from mambast_cli.pipeline.run import encode_style_source
    from mambast_cli.ray.data import _handle_from_payload, _style_payload

    style = make_image("style.png", size=(24, 24), noise=True)
    content = torch.rand(2, 3, 16, 24)
    driver = Engine(weights=tiny_weights, device="cpu", seed=5, disk_cache=False)
    plan = plan_jobs([], [str(style)], tmp_path / "out")
    handle = encode_style_source(driver, plan.styles[0], OPTS)
    payload = _style_payload(driver, handle, 5)
    actor = Engine(weights=tiny_weights, device="cpu", seed=5, disk_cache=False)
    rebuilt = _handle_from_payload(actor, payload)
    torch.testing.assert_close(actor.stylize(content, rebuilt), driver.stylize(content, handle), rtol=0, atol=1e-6)
    assert actor.stats["style_encodes"] == 0


@pytest.mark.slow
def test_cli_ray_every_output_once_bad_image_reported(tmp_path: Path, tiny_weights: Path, make_image: Any,
                                                      local_ray: Any) -> None:
    from typer.testing import CliRunner

    from mambast_cli.cli import build_app

    for i in range(5):
        make_image(f"in/sub{i % 2}/c{i}.jpg", size=(24 + 8 * (i % 2), 16), noise=True)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    s1 = make_image("s/one.png", size=(24, 24), noise=True)
    s2 = make_image("s/two.png", size=(16, 24), noise=True)
    out = tmp_path / "out"
    res = CliRunner().invoke(build_app(), [
        "stylize", str(tmp_path / "in"), "-s", str(s1), "-s", str(s2), "-o", str(out), "--size", "0",
        "--weights", str(tiny_weights), "--ray", "auto", "--ray-actors", "2", "--json"])
    assert res.exit_code == 1, res.output
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    items = [d for d in lines if d["event"] in ("ok", "error")]
    assert len(items) == len({d["output"] for d in items}) == 12     # 6 contents × 2 styles, each exactly once
    errors = [d for d in items if d["event"] == "error"]
    assert len(errors) == 2 and all("broken" in d["input"] and d["error"] == "InputError" for d in errors)
    written = sorted(os.path.relpath(p, out) for p in out.rglob("*.jpg"))
    assert written == sorted(f"sub{i % 2}/c{i}__{s}.jpg" for i in range(5) for s in ("one", "two"))
    assert lines[-1]["event"] == "summary" and lines[-1]["ok"] == 10 and lines[-1]["style_encodes"] == 2
    assert not [p for p in out.rglob("*") if ".part-" in p.name]


@pytest.mark.slow
def test_stylize_dataset_from_binary_files(tmp_path: Path, tiny_weights: Path, make_image: Any,
                                           local_ray: Any) -> None:
    from mambast_cli.ray import stylize_dataset

    for i in range(4):
        make_image(f"in/p{i}.png", size=(16, 16 + 8 * (i % 2)), noise=True)
    style = make_image("art.jpg", size=(24, 24), noise=True)
    out = tmp_path / "out"
    make_image("out/p0__art.jpg")                                     # exists: skipped, not redone
    ds = local_ray.data.read_binary_files(str(tmp_path / "in"), include_paths=True)
    events: list[Any] = []
    report = stylize_dataset(ds, [str(style)], out, weights=tiny_weights, concurrency=1, opts=OPTS,
                             rows_per_batch=2, on_event=events.append)
    assert report.ok == 3 and report.failed == 0 and report.skipped == 1
    assert sorted(p.name for p in out.glob("*.jpg")) == [f"p{i}__art.jpg" for i in range(4)]
    assert len({e.output for e in events if e.kind in ("ok", "skipped")}) == 4

"""The scan tuner's caches: picks bundled with the package (kernels/tuned/*.json) are loaded first, the user's cache
overrides them, and the user's cache file holds only what this machine timed itself."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

pytest.importorskip("triton")
v1 = importlib.import_module("mambast_kernels.cross_scan")     # the package's `cross_scan` is the function


@pytest.fixture()
def fresh(tmp_path: Path, monkeypatch):
    bundled = tmp_path / "tuned"
    bundled.mkdir()
    monkeypatch.setattr(v1, "_BUNDLED_TUNE_DIR", bundled)
    monkeypatch.setattr(v1, "_TUNE_FILE", tmp_path / "user" / "tune.json")
    monkeypatch.setattr(v1, "_TUNE_CACHE", {})
    monkeypatch.setattr(v1, "_BUNDLED", {})
    monkeypatch.setattr(v1, "_tune_loaded", False)
    return bundled


def test_bundled_then_user_and_only_own_picks_saved(fresh: Path) -> None:
    (fresh / "h100.json").write_text(json.dumps({"a|GPU": [64, 2], "b|GPU": [32, 1]}))
    (fresh / "broken.json").write_text("{not json")                      # ignored
    v1._TUNE_FILE.parent.mkdir()
    v1._TUNE_FILE.write_text(json.dumps({"b|GPU": [16, 1], "c|GPU": [8, 1]}))
    v1._load_tune_cache()
    assert v1._TUNE_CACHE == {"a|GPU": [64, 2], "b|GPU": [16, 1], "c|GPU": [8, 1]}   # the user's pick wins
    v1._TUNE_CACHE["d|GPU"] = [128, 4]
    v1._save_tune_cache()
    assert json.loads(v1._TUNE_FILE.read_text()) == {"b|GPU": [16, 1], "c|GPU": [8, 1], "d|GPU": [128, 4]}


def test_the_shipped_picks_are_valid_json_for_known_configs() -> None:
    v2 = importlib.import_module("mambast_kernels.cross_scan_v2")

    known = v2.known_tune_configs()
    for f in sorted(Path(v1.__file__).resolve().parent.joinpath("tuned").glob("*.json")):
        for k, cfg in json.loads(f.read_text()).items():
            assert tuple(cfg) in {tuple(c) for c in known[k.split("|", 1)[0]]}, (f.name, k)

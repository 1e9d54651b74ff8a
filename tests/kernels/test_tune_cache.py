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


def test_a_nearby_batch_borrows_the_pick_instead_of_timing(fresh: Path, monkeypatch) -> None:
    """A key that differs from a timed one only in S and G (G > 1 on both sides or on neither) takes the nearest
    timed pick when it is a candidate, without timing and without saving it (beyond 2x only a pick without segments,
    and not for a single picture's shape); anything else is timed, and MAMBAST_SCAN_TUNE=full times every new key."""
    key = "v2fwd6|S{}|Di1024|L4096|G{}|N16|bf16|save0|GPU"
    (fresh / "h100.json").write_text(json.dumps({key.format(64, 1): [64, 2], key.format(16, 1): [32, 1],
                                                 key.format(1, 64): [64, 2, 2], "v2fwd6|S1|Di1024|L1024|G1|N16|bf16|"
                                                 "save0|GPU": [128, 4]}))
    timed = []
    monkeypatch.setattr(v1, "_interpreting", lambda: False)
    monkeypatch.delenv("MAMBAST_SCAN_TUNE", raising=False)
    monkeypatch.setattr(v1.triton.testing, "do_bench", lambda fn, **kw: timed.append(fn) or 1.0)
    cands = [(32, 1), (64, 2), (128, 4), (64, 2, 2), (64, 2, 4)]
    assert v1._tune(key.format(56, 1), cands, lambda c: None, (8, 1)) == (64, 2) and not timed    # the full batch's
    assert v1._tune(key.format(20, 1), cands, lambda c: None, (8, 1)) == (32, 1) and not timed    # the nearer one
    assert v1._tune(key.format(1, 56), cands, lambda c: None, (8, 1)) == (64, 2, 2) and not timed
    assert key.format(56, 1) not in v1._TUNE_CACHE and not v1._TUNE_FILE.exists()              # borrowed, not saved
    assert v1._tune(key.format(5, 1), cands, lambda c: None, (8, 1)) == (32, 1) and not timed     # 3.2x: still
    monkeypatch.setenv("MAMBAST_SCAN_TUNE", "full")
    v1._tune(key.format(4, 1), cands, lambda c: None, (8, 1))            # asked to time every new key: timed
    assert len(timed) == len(cands) and key.format(4, 1) in json.loads(v1._TUNE_FILE.read_text())
    monkeypatch.delenv("MAMBAST_SCAN_TUNE")
    timed.clear()
    v1._tune(key.format(1, 8).replace("L4096", "L1024"), cands, lambda c: None, (8, 1))   # only G 1 timed there: timed
    v1._tune(key.format(64, 1).replace("L4096", "L2048"), cands, lambda c: None, (8, 1))   # another L: timed
    assert len(timed) == 2 * len(cands)
    timed.clear()
    assert v1._tune(key.format(48, 1), [(16, 1), (128, 4)], lambda c: None, (8, 1)) == (16, 1) and timed  # not a cand.


def test_far_borrowing_skips_segmented_picks_and_single_pictures(fresh: Path, monkeypatch) -> None:
    """Beyond 2x: a segmented pick (element 3 > 1, for few recurrences) is never lent to a batch, and a shape with
    S < 4 and G < 4 (a single picture, where segments may pay) is timed rather than given a batch's pick."""
    key = "v2fwd6|S{}|Di1024|L32400|G1|N16|bf16|save0|GPU"
    (fresh / "h200.json").write_text(json.dumps({key.format(1, 1): [32, 1, 0, 16, 4, 2, 200],
                                                 key.format(64, 1): [64, 2, 0, 0, 4, 2]}))
    timed = []
    monkeypatch.setattr(v1, "_interpreting", lambda: False)
    monkeypatch.delenv("MAMBAST_SCAN_TUNE", raising=False)
    monkeypatch.setattr(v1.triton.testing, "do_bench", lambda fn, **kw: timed.append(fn) or 1.0)
    cands = [(32, 1, 0, 16, 4, 2, 200), (64, 2, 0, 0, 4, 2)]
    assert v1._tune(key.format(8, 1), cands, lambda c: None, (8, 1)) == (64, 2, 0, 0, 4, 2) and not timed  # not S1's
    assert v1._tune(key.format(2, 1), cands, lambda c: None, (8, 1)) == (32, 1, 0, 16, 4, 2, 200)   # within 2x of S1
    assert not timed
    v1._tune(key.format(3, 1), cands, lambda c: None, (8, 1))        # 3x from S1 (segments), 21x from S64: timed
    assert len(timed) == len(cands)

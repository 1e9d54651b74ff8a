"""Disk style cache: location, permissions, atomic writes, checksums, LRU eviction, ls/clear/size."""
from __future__ import annotations

import os
import stat
import time

import pytest
import torch

from mambast_cli.engine import cache as C
from mambast_cli.errors import UsageError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """2 shared CPU cores: one intra-op thread is far faster than two fighting other processes."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tensors(seed: int, n: int = 256) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"memory": torch.randn(1, n, 4, generator=g), "meta": torch.tensor([1, 2, 3], dtype=torch.int64)}


def _age(path, seconds_ago: float) -> None:
    t = time.time() - seconds_ago
    os.utime(path, (t, t))


def test_location_env_and_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv(C.ENV_DIR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert C.cache_dir() == tmp_path / "xdg" / "mambast"
    monkeypatch.setenv(C.ENV_DIR, str(tmp_path / "mine"))
    assert C.cache_dir() == tmp_path / "mine"
    assert C.styles_dir() == tmp_path / "mine" / "styles"


def test_max_bytes_env(monkeypatch):
    monkeypatch.delenv(C.ENV_MAX_BYTES, raising=False)
    assert C.max_bytes() == 2 * 1024 ** 3
    for raw, want in [("1000", 1000), ("512M", 512 * 1024 ** 2), ("1.5G", int(1.5 * 1024 ** 3)), ("64KiB", 65536)]:
        monkeypatch.setenv(C.ENV_MAX_BYTES, raw)
        assert C.max_bytes() == want
    monkeypatch.setenv(C.ENV_MAX_BYTES, "lots")
    with pytest.raises(UsageError):
        C.max_bytes()


def test_put_get_roundtrip_private_and_atomic(tmp_path):
    dc = C.DiskCache(tmp_path / "root", cap_bytes=10 ** 9)
    key = C.make_key(style="abc", weights="w", size=[10, 12])
    assert dc.get(key) is None
    assert dc.put(key, _tensors(0), {"style_key": "abc"})
    got = dc.get(key)
    assert got is not None
    tensors, meta = got
    assert torch.equal(tensors["memory"], _tensors(0)["memory"]) and meta["style_key"] == "abc"
    assert meta["format"] == C.FORMAT and len(meta["checksum"]) == 64
    assert stat.S_IMODE((tmp_path / "root").stat().st_mode) == 0o700
    assert stat.S_IMODE(dc.dir.stat().st_mode) == 0o700
    assert [p.name for p in dc.dir.iterdir()] == [f"{key}.safetensors"]      # no temp files left
    assert dc.stats["hits"] == 1 and dc.stats["misses"] == 1 and dc.stats["writes"] == 1


def test_keys_differ_by_every_part():
    base = dict(style="s", weights="w", size=[1, 2])
    keys = {C.make_key(**base), C.make_key(**{**base, "style": "t"}), C.make_key(**{**base, "weights": "v"}),
            C.make_key(**{**base, "size": [2, 1]})}
    assert len(keys) == 4


def test_corrupt_entry_deleted(tmp_path):
    dc = C.DiskCache(tmp_path, cap_bytes=10 ** 9)
    dc.put("k", _tensors(1))
    p = dc.path_for("k")
    data = bytearray(p.read_bytes())
    data[-1] ^= 0x01
    p.write_bytes(bytes(data))
    assert dc.get("k") is None and not p.exists() and dc.stats["corrupt"] == 1
    p.write_bytes(b"not a safetensors file")
    assert dc.get("k") is None and dc.stats["corrupt"] == 2


def test_lru_eviction_respects_hits(tmp_path):
    dc = C.DiskCache(tmp_path, cap_bytes=10 ** 9)
    dc.put("a", _tensors(1))
    size = dc.path_for("a").stat().st_size
    dc.cap_bytes = int(size * 2.5)                      # room for two entries
    dc.put("b", _tensors(2))
    _age(dc.path_for("a"), 30)
    _age(dc.path_for("b"), 20)
    assert dc.get("a") is not None                       # a hit makes "a" the most recently used
    dc.put("c", _tensors(3))                             # over the cap: the least recently used ("b") goes
    assert dc.path_for("a").exists() and dc.path_for("c").exists() and not dc.path_for("b").exists()
    assert dc.stats["evictions"] == 1
    assert C.total_size(tmp_path) <= dc.cap_bytes


def test_entry_larger_than_cap_is_not_written(tmp_path):
    dc = C.DiskCache(tmp_path, cap_bytes=100)
    assert not dc.put("big", _tensors(1))
    assert C.list_entries(tmp_path) == []
    assert not C.DiskCache(tmp_path, cap_bytes=0).put("zero", _tensors(1))


def test_list_size_clear(tmp_path):
    dc = C.DiskCache(tmp_path, cap_bytes=10 ** 9)
    dc.put("old", _tensors(1), {"style_key": "x"})
    dc.put("new", _tensors(2), {"style_key": "y"})
    _age(dc.path_for("old"), 100)
    (dc.dir / ".stale.123.tmp").write_bytes(b"partial")
    entries = C.list_entries(tmp_path)
    assert [e.key for e in entries] == ["new", "old"]     # most recently used first, temp files not listed
    assert entries[0].metadata["style_key"] == "y" and entries[0].size == dc.path_for("new").stat().st_size
    assert C.total_size(tmp_path) == sum(p.stat().st_size for p in dc.dir.iterdir())
    assert C.clear(tmp_path) == 2
    assert C.list_entries(tmp_path) == [] and C.total_size(tmp_path) == 0 and dc.dir.is_dir()


def test_stale_temp_files_are_cleaned(tmp_path):
    dc = C.DiskCache(tmp_path, cap_bytes=10 ** 9)
    dc.put("a", _tensors(1))
    stale = dc.dir / ".a.999.dead.tmp"
    stale.write_bytes(b"x")
    _age(stale, 7200)
    dc.evict()
    assert not stale.exists()


def test_empty_cache_functions_do_not_create_anything(tmp_path):
    root = tmp_path / "none"
    assert C.list_entries(root) == [] and C.total_size(root) == 0 and C.clear(root) == 0
    assert not root.exists()


def test_file_key(tmp_path):
    p = tmp_path / "s.jpg"
    p.write_bytes(b"hello")
    assert C.file_key(p) == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"


def test_loose_or_foreign_cache_folder(tmp_path, monkeypatch):
    """The cache root is the user's and never modified; mambast's own `styles` folder open to others is made 0700;
    a root owned by another user, or writable by others without the sticky bit, is not used at all (entries could
    be planted there): gets miss, puts are skipped, and `problem` says why."""
    import os
    import stat

    import torch

    from mambast_cli.engine.cache import DiskCache

    root = tmp_path / "c"
    (root / "styles").mkdir(parents=True)
    os.chmod(root, 0o755)
    os.chmod(root / "styles", 0o775)
    dc = DiskCache(root)
    assert dc.usable() and dc.problem is None
    assert stat.S_IMODE(root.stat().st_mode) == 0o755 and stat.S_IMODE((root / "styles").stat().st_mode) == 0o700
    assert dc.put("ab" * 32, {"x": torch.ones(3)}) and dc.get("ab" * 32) is not None

    os.chmod(root, 0o777)                                     # anyone may rename `styles` away and plant another
    loose = DiskCache(root)
    assert not loose.usable() and "writable by other users" in (loose.problem or "")
    assert stat.S_IMODE(root.stat().st_mode) == 0o777
    os.chmod(root, 0o1777)                                    # a shared folder like /tmp: fine, and left as it is
    assert DiskCache(root).usable()
    assert stat.S_IMODE(root.stat().st_mode) == 0o1777
    os.chmod(root, 0o700)

    real_uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real_uid + 1)   # as if the folder belonged to someone else
    other = DiskCache(root)
    assert not other.usable() and "another user" in (other.problem or "")
    assert other.get("ab" * 32) is None and not other.put("cd" * 32, {"x": torch.ones(3)})
    assert not (root / "styles" / ("cd" * 32 + ".safetensors")).exists()


def test_cache_root_that_is_a_file_is_left_alone(tmp_path):
    """MAMBAST_CACHE_DIR pointing at a file (a typo, a picture): the disk cache is off and the file keeps its mode
    (it used to be chmod'ed 0700)."""
    import os
    import stat

    import torch

    from mambast_cli.engine.cache import DiskCache

    f = tmp_path / "v.jpg"
    f.write_bytes(b"not a folder")
    os.chmod(f, 0o644)
    dc = DiskCache(f)
    assert not dc.usable() and "not a folder" in (dc.problem or "")
    assert not dc.put("ab" * 32, {"x": torch.ones(3)}) and dc.get("ab" * 32) is None
    assert stat.S_IMODE(f.stat().st_mode) == 0o644 and f.read_bytes() == b"not a folder"

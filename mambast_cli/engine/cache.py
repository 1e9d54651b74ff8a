"""On-disk style cache (issue 5): encode a style once, reuse it across runs.

Owns the cache folder and its files: where it lives (`cache_dir`), one safetensors file per entry, written
atomically (temp file + rename) with a sha256 checksum of its tensors in the metadata, verified on every read;
a corrupt or unreadable entry is deleted and reported as a miss (the engine recomputes and rewrites it). The folder
is created user-only (0700) and files 0600. Total size is capped (`max_bytes`, default 2 GiB,
`MAMBAST_CACHE_MAX_BYTES`) with least-recently-used eviction: a hit touches the file's mtime, eviction removes the
oldest mtimes first.

Location: `$MAMBAST_CACHE_DIR` if set, else `$XDG_CACHE_HOME/mambast`, else `~/.cache/mambast`; entries live in its
`styles/` subfolder.

What is stored is decided by the engine (see `mambast_cli.engine.engine`): the style memory (encoder_s output) as a
`StyleState.to_tensors()` dict. This module knows nothing of the model: it stores named tensors under a hex key.
It never prints and never raises for cache trouble during a run (a cache that cannot be written is just skipped);
the functions used by `mambast cache ls|clear|size` (`list_entries`, `clear`, `total_size`) need no torch import.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:  # torch is imported lazily so `mambast cache ls` stays instant
    import torch

__all__ = [
    "ENV_DIR", "ENV_MAX_BYTES", "DEFAULT_MAX_BYTES", "FORMAT", "Entry", "DiskCache",
    "cache_dir", "styles_dir", "max_bytes", "list_entries", "clear", "total_size", "file_key", "make_key",
    "tensors_checksum",
]

ENV_DIR = "MAMBAST_CACHE_DIR"
ENV_MAX_BYTES = "MAMBAST_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 2 * 1024 ** 3
FORMAT = "mambast-style-cache/1"
_SUFFIX = ".safetensors"
_STALE_TMP_SECONDS = 3600.0


def cache_dir() -> Path:
    """The cache root: `$MAMBAST_CACHE_DIR`, else `$XDG_CACHE_HOME/mambast`, else `~/.cache/mambast` (not created).

    Returns:
        The root folder path.
    """
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mambast"


def styles_dir(root: Path | None = None) -> Path:
    """The folder holding style entries (`<root>/styles`), not created.

    Args:
        root: cache root; default `cache_dir()`.

    Returns:
        The styles folder path.
    """
    return (root if root is not None else cache_dir()) / "styles"


def max_bytes() -> int:
    """The size cap from `$MAMBAST_CACHE_MAX_BYTES` (bytes; suffixes K, M, G, T accepted), default 2 GiB.

    Returns:
        The cap in bytes (0 disables writing).

    Raises:
        UsageError: the variable is set but not a size.
    """
    raw = os.environ.get(ENV_MAX_BYTES, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}
    txt = raw.upper().removesuffix("IB").removesuffix("B")
    factor = 1
    if txt and txt[-1] in mult:
        factor, txt = mult[txt[-1]], txt[:-1]
    try:
        value = int(float(txt) * factor)
    except ValueError:
        raise UsageError(f"{ENV_MAX_BYTES}={raw!r} is not a size", hint="use bytes, or a number with K/M/G") from None
    if value < 0:
        raise UsageError(f"{ENV_MAX_BYTES}={raw!r} is negative")
    return value


def _ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) if missing; every folder created here gets mode 0700."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask


@dataclass
class Entry:
    """One cache entry as `mambast cache ls` shows it."""

    key: str                   # hex key (the file name without suffix)
    path: Path
    size: int                  # bytes on disk
    last_used: float           # mtime (touched on every hit), seconds since the epoch
    metadata: dict[str, str] = field(default_factory=dict)


def _read_header(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file without loading tensors (no torch needed)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100 * 1024 * 1024:
            raise ValueError("header too large")
        header = json.loads(f.read(n))
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def list_entries(root: Path | None = None) -> list[Entry]:
    """All complete entries, most recently used first (temp files of unfinished writes are not listed).

    Args:
        root: cache root; default `cache_dir()`.

    Returns:
        Entries with their metadata (an unreadable header gives empty metadata, and is still listed).
    """
    d = styles_dir(root)
    out: list[Entry] = []
    if not d.is_dir():
        return out
    for p in d.iterdir():
        if p.name.startswith(".") or not p.name.endswith(_SUFFIX):
            continue
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        try:
            meta = _read_header(p)
        except (OSError, ValueError, struct.error):
            meta = {}
        out.append(Entry(key=p.name[: -len(_SUFFIX)], path=p, size=st.st_size, last_used=st.st_mtime, metadata=meta))
    out.sort(key=lambda e: e.last_used, reverse=True)
    return out


def total_size(root: Path | None = None) -> int:
    """Bytes used by the cache's style entries (temp files included).

    Args:
        root: cache root; default `cache_dir()`.

    Returns:
        Total size in bytes (0 when the folder does not exist).
    """
    d = styles_dir(root)
    if not d.is_dir():
        return 0
    total = 0
    for p in d.iterdir():
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


def clear(root: Path | None = None) -> int:
    """Delete every entry (and leftover temp files). The folder itself stays.

    Args:
        root: cache root; default `cache_dir()`.

    Returns:
        The number of complete entries removed.
    """
    d = styles_dir(root)
    if not d.is_dir():
        return 0
    n = 0
    for p in d.iterdir():
        if p.is_file() and (p.name.endswith(_SUFFIX) or p.name.endswith(".tmp")):
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            n += not p.name.startswith(".")
    return n


def file_key(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes: the `key` to pass to `Engine.encode_style` for a style file.

    Args:
        path: the style image file.

    Returns:
        64 hex digits.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_key(**parts: object) -> str:
    """A cache key: sha256 over the cache format and the given parts (sorted by name, JSON-encoded).

    Args:
        **parts: whatever determines the entry's content (style key, weights id, style size, ...).

    Returns:
        64 hex digits.
    """
    blob = json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def tensors_checksum(tensors: dict[str, "torch.Tensor"]) -> str:
    """sha256 over named tensors (sorted names; name, dtype, shape and raw bytes of each).

    Args:
        tensors: CPU tensors.

    Returns:
        64 hex digits.
    """
    import torch

    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous().cpu()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))   # no copy; hashlib drops the GIL
    return h.hexdigest()


class DiskCache:
    """The style cache folder as the engine uses it: `get` / `put` named tensors under a hex key.

    Never raises for cache trouble: unreadable, corrupt or vanished entries are misses (corrupt ones are deleted),
    and a failed write is skipped. Counters: hits, misses, writes, corrupt, evictions, write_errors.
    Safe against other processes using the same folder (atomic renames; a file evicted under a reader is a miss).
    """

    def __init__(self, root: Path | None = None, cap_bytes: int | None = None) -> None:
        """Args:
            root: cache root; default `cache_dir()`. Created (0700) on the first write.
            cap_bytes: size cap; default `max_bytes()` (environment or 2 GiB).
        """
        self.root = Path(root) if root is not None else cache_dir()
        self.dir = styles_dir(self.root)
        self.cap_bytes = max_bytes() if cap_bytes is None else int(cap_bytes)
        self.stats = {"hits": 0, "misses": 0, "writes": 0, "corrupt": 0, "evictions": 0, "write_errors": 0}
        #: why the disk cache is off for this process (None: usable); set by the first `usable()` check
        self.problem: str | None = None
        self._checked = False

    def usable(self) -> bool:
        """Whether the cache folders may be trusted, checked once per process.

        The root (`MAMBAST_CACHE_DIR` or the default) is the user's folder and is never modified: it must be a
        folder of this user's that other users cannot write to (a shared folder with the sticky bit, like /tmp, is
        fine). The entries' own folder (`<root>/styles`) is mambast's: it must belong to this user and is made 0700
        if it is group- or world-accessible. Anything else (a file, a folder of someone else's, a root others can
        write to) turns the disk cache off for the run: someone could plant entries. The run goes on with the
        in-memory cache only, and `problem` says why. Folders that do not exist yet are fine (they are created 0700
        on the first write)."""
        if self._checked:
            return self.problem is None
        self._checked = True
        if not hasattr(os, "getuid"):       # no POSIX ownership to check
            return True
        for d in (self.root, self.dir):
            try:
                st = d.stat()
            except FileNotFoundError:
                continue
            except OSError as e:
                self.problem = f"cache folder {d} is unreadable ({e.strerror}): disk cache off"
                return False
            if not stat.S_ISDIR(st.st_mode):
                self.problem = f"cache folder {d} is not a folder: disk cache off (set MAMBAST_CACHE_DIR)"
                return False
            if st.st_uid != os.getuid():
                self.problem = f"cache folder {d} belongs to another user: disk cache off (set MAMBAST_CACHE_DIR)"
                return False
            if d == self.root:
                if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
                    self.problem = (f"cache folder {d} is writable by other users: disk cache off "
                                    "(make it private, or set MAMBAST_CACHE_DIR)")
                    return False
            elif st.st_mode & 0o077:
                try:
                    os.chmod(d, 0o700)
                except OSError as e:
                    self.problem = f"cache folder {d} is open to other users and cannot be made private ({e.strerror}): disk cache off"
                    return False
        return True

    def path_for(self, key: str) -> Path:
        """The entry file for `key`."""
        return self.dir / f"{key}{_SUFFIX}"

    def get(self, key: str) -> tuple[dict[str, "torch.Tensor"], dict[str, str]] | None:
        """Load and verify an entry.

        Args:
            key: hex key from `make_key`.

        Returns:
            (tensors on CPU, metadata), or None on a miss (absent, unreadable or corrupt; corrupt is deleted).
        """
        from safetensors.torch import load as st_load

        if not self.usable():
            self.stats["misses"] += 1
            return None
        path = self.path_for(key)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            self.stats["misses"] += 1
            return None
        except OSError:
            self.stats["misses"] += 1
            return None
        try:
            (n,) = struct.unpack("<Q", data[:8])
            meta = json.loads(data[8:8 + n]).get("__metadata__") or {}
            tensors = st_load(data)
            ok = meta.get("format") == FORMAT and meta.get("checksum") == tensors_checksum(tensors)
        except Exception:  # noqa: BLE001 - any parse failure of a cache file means "corrupt", nothing else
            ok = False
        if not ok:
            self.stats["corrupt"] += 1
            self.stats["misses"] += 1
            try:
                path.unlink()
            except OSError:
                pass
            return None
        try:
            os.utime(path)  # LRU: a hit makes the entry the most recently used
        except OSError:
            pass
        self.stats["hits"] += 1
        return tensors, {str(k): str(v) for k, v in meta.items()}

    def put(self, key: str, tensors: dict[str, "torch.Tensor"], metadata: dict[str, str] | None = None) -> bool:
        """Write an entry atomically (temp file + rename), then evict least-recently-used entries over the cap.

        Args:
            key: hex key from `make_key`.
            tensors: named tensors (moved to CPU, made contiguous).
            metadata: extra string metadata (shown by `mambast cache ls`).

        Returns:
            True if written; False if skipped (cap 0, entry larger than the cap, or an OS error).
        """
        from safetensors.torch import save as st_save

        if not self.usable():
            return False
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        meta = {str(k): str(v) for k, v in (metadata or {}).items()}
        meta.update(format=FORMAT, checksum=tensors_checksum(cpu), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        try:
            blob = st_save(cpu, metadata=meta)
        except Exception:  # noqa: BLE001 - safetensors refuses some layouts (shared storage); then we just don't cache
            self.stats["write_errors"] += 1
            return False
        if self.cap_bytes <= 0 or len(blob) > self.cap_bytes:
            return False
        tmp = self.dir / f".{key}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            _ensure_private_dir(self.dir)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, self.path_for(key))
        except OSError:
            self.stats["write_errors"] += 1
            try:
                tmp.unlink()
            except OSError:
                pass
            return False
        self.stats["writes"] += 1
        self.evict(keep=key)
        return True

    def evict(self, keep: str | None = None) -> int:
        """Remove least-recently-used entries until the total is within the cap; also old temp files.

        Args:
            keep: a key never to evict (the entry just written).

        Returns:
            Number of entries removed.
        """
        if not self.dir.is_dir():
            return 0
        now = time.time()
        entries: list[tuple[float, int, Path]] = []
        total = 0
        for p in self.dir.iterdir():
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            if p.name.endswith(".tmp"):
                if now - st.st_mtime > _STALE_TMP_SECONDS:   # left by a killed process
                    try:
                        p.unlink()
                    except OSError:
                        pass
                    continue
                total += st.st_size
                continue
            if not p.name.endswith(_SUFFIX):
                continue
            total += st.st_size
            entries.append((st.st_mtime, st.st_size, p))
        entries.sort(key=lambda e: e[0])
        removed = 0
        for _, size, p in entries:
            if total <= self.cap_bytes:
                break
            if keep is not None and p.name == f"{keep}{_SUFFIX}":
                continue
            try:
                p.unlink()
            except OSError:
                continue
            total -= size
            removed += 1
        self.stats["evictions"] += removed
        return removed

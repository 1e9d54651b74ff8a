"""Output files: safe names, atomic writes, and cleaning up after a killed run.

Owns every write the stylize path makes. Must not print or decode pictures.

Invariants:
- A finished output is complete or absent: bytes go to a hidden temporary file in the same directory
  (``.<name>.part-<pid>-<random>``), are fsync'ed, then renamed over the final name (atomic on POSIX).
  If anything fails, the temporary file is removed. A SIGKILL can leave a temporary file behind but never a
  partial final file; the next run removes temporaries whose writing process is gone (:func:`clean_stale_parts`).
- Names built by :func:`safe_component` / :func:`output_name` cannot leave the output folder: no ``/``, ``\\``,
  NUL, control characters or newlines, never ``.``/``..``, never a leading dot, at most 200 bytes.
- Any OSError while writing (ENOSPC, EROFS, EACCES, ...) is an OutputError: the output location is unusable, so
  the run stops rather than failing every item the same way. The exception is a path blocked for one output only
  (a file where its sub-folder goes, a folder at its name): an OutputPathError, which fails that item alone.
"""
from __future__ import annotations

import errno
import os
import re
import random
import shutil
from pathlib import Path

from mambast_cli.errors import OutputError, OutputPathError

PART_MARKER = ".part-"
_PART_RE = re.compile(r"^\..+\.part-(\d+)-[0-9a-f]{8}$")
# the hidden folder of an unfinished image-sequence video output (mambast_cli.video.io.ImageSequenceWriter) is
# temp_path(<folder>/FRAMES_DIR_NAME), so it is recognised (and removed when stale) by name
FRAMES_DIR_NAME = "mambast-frames"
_FRAMES_DIR_RE = re.compile(rf"^\.{re.escape(FRAMES_DIR_NAME + PART_MARKER)}(\d+)-[0-9a-f]{{8}}$")
_MAX_COMPONENT_BYTES = 200
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\\ud800-\udfff]")  # controls (incl. NUL, newline), separators, undecodable bytes

_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or choose another -o",
    errno.EROFS: "the output folder is on a read-only file system: choose another -o",
    errno.EACCES: "check the output folder's permissions or choose another -o",
    errno.EPERM: "check the output folder's permissions or choose another -o",
    errno.EDQUOT: "the disk quota is exceeded: free some space or choose another -o",
}


def safe_component(name: str, *, max_bytes: int = _MAX_COMPONENT_BYTES) -> str:
    """Turn any string into one safe path component.

    Args:
        name: a file or folder name from anywhere (user input, a file system, stdin).
        max_bytes: longest result in UTF-8 bytes (cut on a character boundary).

    Returns:
        A non-empty name without separators, NUL, control characters or undecodable bytes, not starting with a
        dot, and never ``.`` or ``..``.
    """
    s = _UNSAFE.sub("_", name)
    if s.startswith("."):
        s = "_" + s[1:]
    if not s:
        s = "_"
    b = s.encode("utf-8")
    if len(b) > max_bytes:
        s = b[:max_bytes].decode("utf-8", errors="ignore") or "_"
    return s


def output_name(stem: str, style_stem: str, ext: str, *, dedup: int = 1) -> str:
    """The output file name ``{stem}__{style-stem}{ext}`` (``_N`` appended before the extension when dedup > 1).

    Args:
        stem: the content's file name without extension (made safe here).
        style_stem: the style's file name without extension (made safe here).
        ext: the extension with its dot (``.jpg``).
        dedup: 1 for the plain name; 2, 3, ... for the de-duplicated variants.

    Returns:
        A safe file name of at most about 220 bytes.
    """
    a = safe_component(stem, max_bytes=120)
    b = safe_component(style_stem, max_bytes=80)
    suffix = f"_{dedup}" if dedup > 1 else ""
    return f"{a}__{b}{suffix}{ext}"


def is_within(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Tell whether a path lies inside (or is) a folder, after resolving symlinks and ``..``.

    Args:
        path: any path (need not exist).
        root: a folder (need not exist).

    Returns:
        True if ``path`` is ``root`` or below it.
    """
    p = os.path.realpath(path)
    r = os.path.realpath(root)
    try:
        return os.path.commonpath([p, r]) == r
    except ValueError:  # different drives (Windows)
        return False


def _output_error(action: str, path: str, e: OSError) -> OutputError:
    reason = e.strerror or e.__class__.__name__
    return OutputError(f"cannot {action} {path}: {reason}", hint=_HINTS.get(e.errno or 0))


def ensure_dir(path: str | os.PathLike[str]) -> None:
    """Create a folder (and its parents) for outputs.

    Args:
        path: the folder.

    Raises:
        OutputError: it cannot be created (a file in the way, read-only file system, permissions).
    """
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise _output_error("create folder", os.fspath(path), e) from e
    if not os.path.isdir(path):
        raise OutputError(f"cannot create folder {os.fspath(path)}: a file is in the way")


def write_atomic(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> None:
    """Write a file so that it is either complete or absent (temporary file, fsync, rename).

    Args:
        path: the final file; its folder is created if needed. An existing file is replaced.
        data: the bytes.
        fsync: flush the data to disk before the rename (keep on: a crash must not leave an empty file).

    Raises:
        OutputError: any OSError on the way; the temporary file is removed first.
    """
    final = os.fspath(path)
    parent = os.path.dirname(final) or "."
    tmp = temp_path(final)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        try:
            fd = os.open(tmp, flags, 0o666)
        except (FileNotFoundError, NotADirectoryError):   # the folder is missing (or a file is in its way)
            _make_parent(parent)                          # creates it, or raises the clear error
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:                           # a temporary name already taken: draw another
            tmp = temp_path(final)
            fd = os.open(tmp, flags, 0o666)
    except OSError as e:
        raise _output_error("write to", parent, e) from e
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except OSError as e:
        _unlink_quietly(tmp)
        if isinstance(e, IsADirectoryError):  # a folder has this output's name (--overwrite): this item only
            raise OutputPathError(f"cannot write {final}: a folder has that name") from e
        raise _output_error("write", final, e) from e
    except BaseException:  # KeyboardInterrupt mid-write: never leave the temporary behind
        _unlink_quietly(tmp)
        raise


def _make_parent(parent: str) -> None:
    """Create an output's folder. A file in its way fails only the outputs below it (OutputPathError); any other
    OSError (read-only, permissions, full disk) is an OutputError."""
    try:
        os.makedirs(parent, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputPathError(f"cannot create folder {parent}: a file is in the way",
                              hint="move that file, or choose another -o") from None
    except OSError as e:
        raise _output_error("create folder", parent, e) from e


def temp_path(final: str | os.PathLike[str]) -> str:
    """A hidden temporary name next to ``final``: ``<dir>/.<name>.part-<pid>-<8 hex>``, the form
    :func:`clean_stale_parts` recognises (every writer of outputs uses it, the video writers too).

    Args:
        final: the output path.

    Returns:
        The temporary path (not created).
    """
    final = os.fspath(final)
    parent = os.path.dirname(final) or "."
    # uniqueness, not secrecy: os.urandom per output cost a syscall per picture; O_EXCL catches the rare clash
    return os.path.join(parent, f".{os.path.basename(final)}{PART_MARKER}{os.getpid()}-{random.getrandbits(32):08x}")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def discard_parts(final: str | os.PathLike[str], pid: int) -> int:
    """Remove the temporaries that process ``pid`` left next to ``final`` (a worker that died mid-write).

    Only names of the :func:`temp_path` form for this output and this process id are touched. The caller must
    know that the process is dead (a reaped child): unlike :func:`clean_stale_parts`, the pid is not checked here.

    Args:
        final: the output path whose temporaries to remove.
        pid: the process id the temporaries carry.

    Returns:
        How many were removed.
    """
    final = os.fspath(final)
    prefix = f".{os.path.basename(final)}{PART_MARKER}{pid}-"
    return sum(_unlink_counted(e.path) for e in _entries(os.path.dirname(final) or ".")
               if e.name.startswith(prefix) and _PART_RE.match(e.name) and e.is_file(follow_symlinks=False))


def _entries(folder: str | os.PathLike[str]) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(folder))
    except OSError:
        return []


def _unlink_counted(path: str) -> int:
    try:
        os.unlink(path)
        return 1
    except OSError:
        return 0


def clean_stale_parts(folder: str | os.PathLike[str]) -> int:
    """Remove temporaries left in a folder by a killed run (their writing process no longer exists).

    Only files named the way :func:`write_atomic` (and the video writers) name them, and hidden frame folders of
    unfinished image-sequence outputs (``.mambast-frames.part-<pid>-<hex>``), are touched, and only when the process
    id they carry is not alive on this machine.

    Args:
        folder: an output folder (missing folders are ignored).

    Returns:
        How many temporaries were removed.
    """
    removed = 0
    for entry in _entries(folder):
        m = _PART_RE.match(entry.name)
        if m and entry.is_file(follow_symlinks=False) and not _pid_alive(int(m.group(1))):
            removed += _unlink_counted(entry.path)
            continue
        m = _FRAMES_DIR_RE.match(entry.name)
        if m and entry.is_dir(follow_symlinks=False) and not _pid_alive(int(m.group(1))):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def out_path(outdir: str | os.PathLike[str], rel_dir: tuple[str, ...], name: str) -> Path:
    """Join an output folder, a mirrored sub-folder and a file name, checking that the result stays inside.

    Args:
        outdir: the output folder.
        rel_dir: sub-folder components (made safe here).
        name: a file name from :func:`output_name`.

    Returns:
        The output path.
    """
    parts = [safe_component(c) for c in rel_dir]
    p = Path(outdir, *parts, safe_component(name, max_bytes=240))
    root = os.path.normpath(os.fspath(outdir))
    if os.path.commonpath([os.path.normpath(os.fspath(p)), root]) != root:  # unreachable with safe components
        raise OutputError(f"refusing to write outside the output folder: {p}")
    return p


def probe_writable(folder: str | os.PathLike[str]) -> None:
    """Create the output folder if needed and check that a file can be created in it (then removed).

    Args:
        folder: the output folder.

    Raises:
        OutputError: the folder cannot be created or written (read-only file system, permissions, disk full).
    """
    ensure_dir(folder)
    probe = os.path.join(os.fspath(folder), f".mambast-probe{PART_MARKER}{os.getpid()}-{random.getrandbits(32):08x}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except OSError as e:
        raise _output_error("write to", os.fspath(folder), e) from e
    _unlink_quietly(probe)

"""Planning: turn command-line inputs and styles into the full list of jobs before any pixel is decoded.

Owns input discovery (files, folders walked recursively, globs, literal paths from stdin, an in-memory stdin
image), output naming (mirrored folders, ``{stem}__{style-stem}.{ext}``, deterministic de-duplication), skipping
inputs inside the output folder, and skip-existing. Must not decode pictures, write files or print.
Planning is cheap (a stat per file and per output), so ``--dry-run`` and resuming a killed run cost little.

Discovery rules:
- A file given by name is always an input (its content decides whether it is an image).
- A folder is walked recursively in sorted order without following symlinked folders; hidden entries (a leading
  dot) are skipped; a file is taken when its extension is a known image extension or its first bytes are an
  image signature. The output tree mirrors the folder.
- A path that does not exist but contains ``*``, ``?`` or ``[`` is a glob (``**`` recurses); the output tree
  mirrors the matches below the pattern's fixed leading folders.
- The same file reached twice (after resolving symlinks) is planned once.
- Output names that collide (``a.jpg`` and ``a.png``; names equal but for case) get ``_2``, ``_3``, ... in the
  order inputs were given (folders: sorted order), so the same command always gives the same names.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from mambast_cli.errors import UsageError
from mambast_cli.io import FORMATS, is_within, looks_like_image, out_path, output_name, safe_component

IMAGE_EXTS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .apng .gif .webp .bmp .dib .tif .tiff .jp2 .j2k .ppm .pgm .pbm .pnm .tga .ico "
    ".avif .heic .heif".split()
)
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Source:
    """One content or style picture.

    Attributes:
        path: the file to read, or None when ``data`` holds the bytes (stdin).
        display: how messages and events name it.
        rel_dir: output sub-folder components (mirroring the input folder), already safe.
        stem: the name used in output file names, already safe.
        data: the encoded bytes for an in-memory source.
    """

    path: str | None
    display: str
    rel_dir: tuple[str, ...]
    stem: str
    data: bytes | None = None


@dataclass(frozen=True)
class Event:
    """Something that happened to one item (or the run), reported through ``on_event``.

    Attributes:
        kind: ``ok``, ``error``, ``skipped``, ``planned`` (dry run) or ``note``.
        input: the content's display name.
        style: the style's display name.
        output: the output path (``-`` for stdout).
        message: the reason (error/skipped/note).
        error: the error class name for ``error`` events.
        seconds: wall time spent on the item (``ok``).
        hint: what to do about an error.
    """

    kind: str
    input: str | None = None
    style: str | None = None
    output: str | None = None
    message: str | None = None
    error: str | None = None
    seconds: float | None = None
    hint: str | None = None

    def to_dict(self) -> dict[str, object]:
        """The event as a JSON-ready dict (None fields dropped; ``event`` holds the kind)."""
        d: dict[str, object] = {"event": self.kind}
        for k in ("input", "style", "output", "message", "error", "seconds", "hint"):
            v = getattr(self, k)
            if v is not None:
                d[k] = round(v, 4) if isinstance(v, float) else v
        return d


@dataclass
class Plan:
    """Every job of a run: contents × styles, with the outputs already named and the finished ones marked.

    Attributes:
        outdir: the output folder, or None when the single result goes to stdout.
        contents: content sources.
        styles: style sources.
        ext: the output extension (``.jpg``).
        fmt: the output format (``jpg``, ``png``, ``webp``).
        pending: per content, the style indices still to compute.
        done: per content, the style indices whose output already exists (skipped).
        notes: events found while planning (missing inputs are ``error``, inputs in the output folder ``skipped``).
        renamed: output names that were de-duplicated, by (content index, style index).
    """

    outdir: Path | None
    contents: list[Source]
    styles: list[Source]
    ext: str
    fmt: str = "jpg"
    pending: list[tuple[int, ...]] = field(default_factory=list)
    done: list[tuple[int, ...]] = field(default_factory=list)
    notes: list[Event] = field(default_factory=list)
    renamed: dict[tuple[int, int], str] = field(default_factory=dict)

    @property
    def n_pending(self) -> int:
        """Jobs to compute."""
        return sum(len(p) for p in self.pending)

    @property
    def n_done(self) -> int:
        """Jobs skipped because their output exists."""
        return sum(len(d) for d in self.done)

    def output_for(self, ci: int, si: int) -> Path | None:
        """The output path of content ``ci`` × style ``si`` (None for stdout).

        Args:
            ci: content index.
            si: style index.

        Returns:
            The path inside ``outdir``.
        """
        if self.outdir is None:
            return None
        c, s = self.contents[ci], self.styles[si]
        name = self.renamed.get((ci, si)) or output_name(c.stem, s.stem, self.ext)
        return out_path(self.outdir, c.rel_dir, name)

    def output_str(self, ci: int, si: int) -> str:
        """The output path as events show it (``-`` for stdout)."""
        p = self.output_for(ci, si)
        return "-" if p is None else os.fspath(p)

    def start_events(self) -> Iterator[Event]:
        """What a run reports before any work: the planning notes, then one ``skipped`` event per finished output."""
        yield from self.notes
        for ci, done in enumerate(self.done):
            for si in done:
                yield Event("skipped", input=self.contents[ci].display, style=self.styles[si].display,
                            output=self.output_str(ci, si), message="output exists (use --overwrite to redo)")

    def jobs(self) -> Iterator[tuple[int, int]]:
        """Iterate the pending (content index, style index) pairs in order."""
        for ci, styles in enumerate(self.pending):
            for si in styles:
                yield ci, si


def _stem(name: str) -> str:
    return safe_component(Path(name).stem if Path(name).suffix else name, max_bytes=120)


def _is_glob(s: str) -> bool:
    return any(ch in _GLOB_CHARS for ch in s)


def _glob_root(pattern: str) -> str:
    """The fixed leading folders of a glob pattern (what the output tree mirrors below)."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for p in parts[:-1]:
        if _is_glob(p):
            break
        fixed.append(p)
    return os.path.join(*fixed) if fixed else "."


def _looks_like_image_file(path: str, name: str) -> bool:
    if os.path.splitext(name)[1].lower() in IMAGE_EXTS:
        return True
    if not os.path.isfile(path):  # a FIFO, socket or device: opening it to sniff could block forever
        return False
    try:
        with open(path, "rb") as f:
            return looks_like_image(f.read(16))
    except OSError:
        return False


class _Collector:
    """Accumulates content sources, dropping duplicates and inputs inside the output folder."""

    def __init__(self, outdir: str | None) -> None:
        self.outdir = outdir
        self.out_real = os.path.realpath(outdir) if outdir else None
        self.sources: list[Source] = []
        self.notes: list[Event] = []
        self.inside_out = 0          # inputs dropped for being inside the output folder
        self._seen: set[str] = set()

    def add_file(self, path: str, rel_dir: tuple[str, ...], check_outdir: bool = True) -> None:
        real = os.path.realpath(path)
        if real in self._seen:
            return
        self._seen.add(real)
        if check_outdir and self.outdir and is_within(path, self.outdir):
            self.notes.append(Event("skipped", input=path, message="is inside the output folder (never overwritten)"))
            self.inside_out += 1
            return
        self.sources.append(Source(path, path, rel_dir, _stem(os.path.basename(path))))

    def add_tree(self, folder: str, root: str) -> None:
        if self.outdir and is_within(folder, self.outdir):
            self.notes.append(Event("skipped", input=folder, message="folder is inside the output folder"))
            self.inside_out += 1
            return
        found = 0
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
            keep = []
            for d in sorted(dirnames):
                if d.startswith("."):
                    continue
                if self.out_real and os.path.realpath(os.path.join(dirpath, d)) == self.out_real:
                    self.notes.append(
                        Event("note", input=os.path.join(dirpath, d), message="output folder inside the input folder: not walked")
                    )
                    continue
                keep.append(d)
            dirnames[:] = keep
            rel = os.path.relpath(dirpath, root)
            rel_dir = tuple(safe_component(p) for p in Path(rel).parts if p not in (".", ""))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                p = os.path.join(dirpath, name)
                if _looks_like_image_file(p, name):
                    found += 1
                    self.add_file(p, rel_dir, check_outdir=os.path.islink(p))
        if not found:
            self.notes.append(Event("note", input=folder, message="no images found in this folder"))


def plan_jobs(
    inputs: Sequence[str],
    styles: Sequence[str],
    outdir: str | os.PathLike[str] | None,
    *,
    fmt: str = "jpg",
    overwrite: bool = False,
    literal_inputs: Sequence[str] = (),
    stdin_image: bytes | None = None,
) -> Plan:
    """Plan a run: discover inputs, name every output, mark the ones already done.

    Args:
        inputs: files, folders or glob patterns from the command line.
        styles: style image files (each must be a file; a folder or glob is expanded to its images).
        outdir: the output folder, or None to send the single result to stdout.
        fmt: output format (``jpg``, ``png``, ``webp``).
        overwrite: plan outputs that already exist instead of skipping them.
        literal_inputs: paths read from stdin (never glob-expanded; folders are walked).
        stdin_image: image bytes read from stdin (content named ``stdin``).

    Returns:
        The plan (no file is read or written beyond stat calls and 16-byte sniffs of unknown extensions).

    Raises:
        UsageError: no style given, unknown format, stdout output with more than one job, or every input inside
            the output folder.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}", hint=f"choose from {', '.join(FORMATS)}")
    if not styles:
        raise UsageError("no style image given", hint="add --style STYLE.jpg")
    out = os.fspath(outdir) if outdir is not None else None
    col = _Collector(out)
    if stdin_image is not None:
        col.sources.append(Source(None, "<stdin>", (), "stdin", stdin_image))
    tagged = [(a, False) for a in inputs] + [(a, True) for a in literal_inputs]
    for arg, literal in tagged:
        if os.path.isdir(arg):
            col.add_tree(arg, arg)
        elif os.path.lexists(arg):
            col.add_file(arg, ())
        elif not literal and _is_glob(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                col.notes.append(Event("error", input=arg, error="InputError", message="pattern matched no files"))
            root = _glob_root(arg)
            for m in matches:
                rel = os.path.relpath(os.path.dirname(m), root)
                rel_dir = tuple(safe_component(p) for p in Path(rel).parts if p not in (".", ""))
                if os.path.isdir(m):
                    col.add_tree(m, root)
                else:
                    col.add_file(m, rel_dir)
        else:
            col.notes.append(Event("error", input=arg, error="InputError", message="no such file or folder"))

    if not col.sources and col.inside_out:
        raise UsageError(f"every input is inside the output folder {out}, and inputs there are never stylised "
                         "(they could be earlier outputs)", hint="choose another -o")
    style_sources = _plan_styles(styles, col.notes)
    plan = Plan(Path(out) if out is not None else None, col.sources, style_sources, FORMATS[fmt][1], fmt=fmt, notes=col.notes)
    if out is None and len(plan.contents) * len(plan.styles) > 1:
        raise UsageError("-o - writes one picture to stdout, but this run has several", hint="give one input and one style")
    _name_outputs(plan, overwrite)
    return plan


def _plan_styles(styles: Sequence[str], notes: list[Event]) -> list[Source]:
    result: list[Source] = []
    seen_real: set[str] = set()
    seen_stem: set[str] = set()
    paths: list[str] = []
    for s in styles:
        if os.path.isdir(s):
            for dirpath, dirnames, filenames in os.walk(s):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                paths += [os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith(".")
                          and _looks_like_image_file(os.path.join(dirpath, f), f)]
        elif not os.path.lexists(s) and _is_glob(s):
            paths += sorted(glob.glob(s, recursive=True))
        else:
            paths.append(s)  # a missing style fails its own items with a clear message
    for p in paths:
        real = os.path.realpath(p)
        if real in seen_real:
            continue
        seen_real.add(real)
        stem = _stem(os.path.basename(p))
        base, n = stem, 1
        while stem.casefold() in seen_stem:
            n += 1
            stem = f"{base}_{n}"
        seen_stem.add(stem.casefold())
        result.append(Source(p, p, (), stem))
    if not result:
        notes.append(Event("error", style=", ".join(styles), error="InputError", message="no style images found"))
    return result


def _name_outputs(plan: Plan, overwrite: bool) -> None:
    """Fill ``pending``/``done``/``renamed``: de-duplicate colliding names, skip existing outputs."""
    used: set[str] = set()
    # style files inside the output folder must never be overwritten, even with --overwrite
    protected = {os.path.realpath(s.path) for s in plan.styles
                 if s.path and plan.outdir is not None and is_within(s.path, plan.outdir)}
    for ci, c in enumerate(plan.contents):
        pending: list[int] = []
        done: list[int] = []
        for si, s in enumerate(plan.styles):
            if plan.outdir is None:
                pending.append(si)
                continue
            n = 1
            while True:
                name = output_name(c.stem, s.stem, plan.ext, dedup=n)
                key = "/".join(c.rel_dir + (name,)).casefold()
                if key not in used:
                    break
                n += 1
            used.add(key)
            if n > 1:
                plan.renamed[(ci, si)] = name
            target = plan.output_for(ci, si)
            if protected and target is not None and os.path.realpath(target) in protected:
                plan.notes.append(Event("skipped", input=c.display, style=s.display, output=os.fspath(target),
                                        message="the output would overwrite a style image"))
            elif not overwrite and target is not None and os.path.lexists(target):
                done.append(si)
            else:
                pending.append(si)
        plan.pending.append(tuple(pending))
        plan.done.append(tuple(done))

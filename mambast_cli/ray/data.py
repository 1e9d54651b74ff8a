"""Clusters through Ray Data: image paths in a Ray Dataset → model actor pool (``map_batches``) → outputs on shared storage.

Owns the Ray integration behind ``mambast stylize --ray ADDRESS`` and ``python -m mambast_cli.ray``: connecting to
the cluster, encoding the styles once on the driver and sharing them through the object store, the actor class that
loads the weights once and runs the ordinary streaming pipeline (mambast_cli.pipeline.run) on each batch of rows, and
turning the per-item result rows back into pipeline Events and a Report. No home-made scheduler: Ray Data streams
the rows, sizes the actor pool (``concurrency``), places actors on GPUs (``num_gpus``) and restarts dead actors.

Must not print (events go to ``on_event``); never picks exit codes. ``ray`` is imported inside the functions (the
``ray`` extra: ``pip install 'mambast[ray]'``); without it a UsageError says how to install it.

Invariants:
- Styles are decoded and encoded once, on the driver (its GPU if it has one, else its CPU): the style *memory*
  (encoder_s output, as ``StyleState.to_tensors()``, the same format as the disk cache) is ``ray.put`` once and
  every actor rebuilds a StyleHandle from it. Actors never run the style encoder. Each actor lays the memory out
  for its content grids with the same seed, so results do not depend on which actor ran an item.
- Output names are the ones ``mambast stylize`` gives (``plan_jobs`` runs on the driver: mirrored folders,
  ``{stem}__{style-stem}.{ext}``, de-duplication, skip-existing), and outputs are written atomically by the
  actor (``write_atomic``), so the output folder must be a path every node can write (NFS, a shared mount).
- One result row per (content, style) item: ``ok`` or ``error`` (a bad image is an error row, never a failed
  task). An OutputError in an actor becomes a ``fatal`` row; the driver stops and raises it (exit 3).
- Inputs may be paths on shared storage (read by the actor) or, for a Dataset made with
  ``ray.data.read_binary_files(..., include_paths=True)``, the bytes themselves (any URI Ray can read: s3://, gs://).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from mambast_cli.errors import MambastError, OutputError, UsageError, WeightsError
from mambast_cli.io import output_name, safe_component
from mambast_cli.pipeline.plan import Event, Plan, Source, plan_jobs
from mambast_cli.pipeline.run import Report, RunOptions, encode_style_source, run_plan

if TYPE_CHECKING:
    import ray.data

__all__ = ["StylizeActor", "stylize_dataset", "stylize_plan"]

EventCallback = Callable[[Event], None]
_FIELDS = ("kind", "input", "style", "output", "error", "message", "hint", "seconds")


def _require_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - the data extra
    except ImportError as e:
        raise UsageError(f"Ray is not installed ({e})", hint="pip install 'mambast[ray]'") from e
    return ray


def _connect(address: str | None) -> Any:
    """Connect to the cluster (``auto``: the running one; ``local``: start one here), unless already connected."""
    ray = _require_ray()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": True}
        if address and address != "local":
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UsageError(f"cannot connect to the Ray cluster at {address!r}: {e}",
                             hint="start it with `ray start --head`, or pass --ray local for a one-machine cluster") from e
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # mambast draws its own
        if hasattr(ctx, "print_on_execution_start"):
            ctx.print_on_execution_start = False
    except (ImportError, AttributeError):
        pass
    return ray


# ----------------------------------------------------------------------------------------------------------------
# styles: encoded on the driver, shared through the object store


def _style_payload(engine: Any, handle: Any, seed: int) -> dict[str, Any]:
    """What an actor needs to rebuild a style handle without running the style encoder."""
    try:
        from mambast_cli.engine.engine import StyleHandle
        from mambast_cli.model import StyleState
    except ImportError:  # pragma: no cover - the engine is part of the package
        StyleHandle = None  # type: ignore[assignment,misc]
    if StyleHandle is not None and isinstance(handle, StyleHandle):
        memory = handle.memory.detach().to("cpu")
        state = StyleState(memory, tuple(handle.style_grid), tuple(handle.style_grid), seed, [], [])
        return {"tensors": state.to_tensors(), "key": handle.key, "cache_key": handle.cache_key,
                "size": list(handle.size), "weights_id": getattr(engine, "weights_id", "")}
    return {"handle": handle}  # another engine (the fake one): its handle is plain, picklable data


def _handle_from_payload(engine: Any, p: dict[str, Any]) -> Any:
    if "handle" in p:
        return p["handle"]
    import torch

    from mambast_cli.engine.engine import StyleHandle
    from mambast_cli.model import StyleState

    if p["weights_id"] and getattr(engine, "weights_id", p["weights_id"]) != p["weights_id"]:
        raise WeightsError("the actors loaded other weights than the driver encoded the styles with",
                           hint="give a weights file every node reads identically (a shared path)")
    st = StyleState.from_tensors(p["tensors"])
    return StyleHandle(p["key"], p["cache_key"], tuple(p["size"]), tuple(st.style_grid),  # type: ignore[arg-type]
                       st.memory.to(engine.device, torch.float32), "shared")


def encode_styles(plan: Plan, opts: RunOptions, engine_kwargs: dict[str, Any], *, device: str = "auto",
                  on_event: EventCallback | None = None) -> tuple[dict[int, dict[str, Any]], dict[int, Event]]:
    """Encode every style the plan needs once, on this machine, into object-store-ready payloads.

    Args:
        plan: the plan.
        opts: run options (style size, max side, max pixels).
        engine_kwargs: engine keywords (weights, precision, seed, ...; ``device`` is replaced).
        device: where to run the style encoder (``auto``: this machine's GPU if any, else its CPU).
        on_event: receives a ``note`` for each style that cannot be used.

    Returns:
        (payload by style index, error event by style index for the styles that failed).

    Raises:
        WeightsError / DeviceError: the engine cannot be built here.
    """
    from mambast_cli.pipeline import create_engine

    kwargs = dict(engine_kwargs)
    kwargs["device"] = device
    needed = sorted({si for p in plan.pending for si in p})
    payloads: dict[int, dict[str, Any]] = {}
    failed: dict[int, Event] = {}
    if not needed:
        return payloads, failed
    engine = create_engine(**kwargs)
    for si in needed:
        src = plan.styles[si]
        try:
            handle = encode_style_source(engine, src, opts)
        except MambastError as e:
            failed[si] = Event("error", style=src.display, error=type(e).__name__, message=f"style failed: {e}", hint=e.hint)
            if on_event is not None:
                on_event(Event("note", style=src.display, message=f"style unusable, its items fail: {e}"))
            continue
        payloads[si] = _style_payload(engine, handle, int(kwargs.get("seed", 0) or 0))
    del engine
    return payloads, failed


# ----------------------------------------------------------------------------------------------------------------
# the actor


class StylizeActor:
    """Ray Data callable class: one engine per actor (weights loaded once), styles from the object store.

    ``__call__`` takes a batch of rows (columns ``path`` and optionally ``bytes``, ``display``, ``rel_dir``,
    ``stem``, ``styles``, ``names``: see :func:`plan_rows`) and returns one result row per (content, style):
    ``kind`` (ok/error/skipped/fatal), ``input``, ``style``, ``output``, ``error``, ``message``, ``hint``,
    ``seconds``.
    """

    def __init__(self, styles_ref: list[Any], style_sources: list[tuple[str, str]], out_dir: str, fmt: str,
                 ext: str, opts: RunOptions, engine_kwargs: dict[str, Any], overwrite: bool = False) -> None:
        """Load the engine and rebuild the style handles.

        Args:
            styles_ref: ``[ObjectRef]`` of the payload dict by style index (wrapped in a list so Ray passes the
                reference, fetched here once per actor).
            style_sources: (display, stem) of every style, by index.
            out_dir: the output folder (shared storage).
            fmt: output format; ext: its extension.
            opts: run options.
            engine_kwargs: engine keywords (``device`` defaults to ``auto``: the GPU Ray gave this actor, if any).
            overwrite: for rows without planned names, redo outputs that exist.
        """
        import ray

        from mambast_cli.pipeline import create_engine

        kwargs = dict(engine_kwargs)
        kwargs.setdefault("device", "auto")
        self.engine = create_engine(**kwargs)
        payloads: dict[int, dict[str, Any]] = ray.get(styles_ref[0])
        self.handles = {si: _handle_from_payload(self.engine, p) for si, p in payloads.items()}
        self.styles = [Source(None, display, (), stem) for display, stem in style_sources]
        self.out_dir, self.fmt, self.ext, self.opts, self.overwrite = out_dir, fmt, ext, opts, overwrite

    def _plan(self, batch: dict[str, Any]) -> Plan:
        n = len(batch["path"])
        contents: list[Source] = []
        pending: list[tuple[int, ...]] = []
        done: list[tuple[int, ...]] = []
        renamed: dict[tuple[int, int], str] = {}
        all_styles = tuple(sorted(self.handles))
        for i in range(n):
            path = str(batch["path"][i])
            data = batch["bytes"][i] if "bytes" in batch else None
            display = str(batch["display"][i]) if "display" in batch else path
            rel = str(batch["rel_dir"][i]) if "rel_dir" in batch else ""
            rel_dir = tuple(safe_component(c) for c in rel.split("/") if c)
            base = os.path.basename(path.rstrip("/")) or "image"
            stem = str(batch["stem"][i]) if "stem" in batch else safe_component(Path(base).stem or base, max_bytes=120)
            contents.append(Source(None if data is not None else path, display, rel_dir, stem,
                                   bytes(data) if data is not None else None))
            styles = tuple(json.loads(batch["styles"][i])) if "styles" in batch else all_styles
            names = {int(k): v for k, v in json.loads(batch["names"][i]).items()} if "names" in batch else {}
            todo, skip = [], []
            for si in styles:
                name = names.get(si) or output_name(stem, self.styles[si].stem, self.ext)
                renamed[(i, si)] = name
                if "names" not in batch and not self.overwrite and os.path.exists(
                        os.path.join(self.out_dir, *rel_dir, name)):
                    skip.append(si)
                else:
                    todo.append(si)
            pending.append(tuple(todo))
            done.append(tuple(skip))
        return Plan(Path(self.out_dir), contents, self.styles, self.ext, fmt=self.fmt, pending=pending, done=done,
                    renamed=renamed)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        """Stylise one batch of rows; returns the result rows (see the class docstring)."""
        plan = self._plan(batch)
        events: list[Event] = []
        try:
            run_plan(plan, self.engine, self.opts, on_event=events.append, style_handles=self.handles)
        except OutputError as e:
            events.append(Event("fatal", error=type(e).__name__, message=str(e), hint=e.hint))
        rows: dict[str, list[Any]] = {k: [] for k in _FIELDS}
        for ev in events:
            for k in _FIELDS:
                v = getattr(ev, k)
                if k == "seconds":
                    rows[k].append(-1.0 if v is None else float(v))
                else:
                    rows[k].append("" if v is None else str(v))
        return rows


# ----------------------------------------------------------------------------------------------------------------
# driver


def plan_rows(plan: Plan) -> list[dict[str, Any]]:
    """The plan's pending contents as Dataset rows (one per content; its styles and planned output names).

    Args:
        plan: from ``plan_jobs``; contents must be files (not stdin).

    Returns:
        Rows with ``path``, ``display``, ``rel_dir`` (``/``-joined), ``stem``, ``styles`` and ``names`` (JSON).

    Raises:
        UsageError: a content is held in memory (stdin), which the cluster cannot read.
    """
    rows = []
    for ci, styles in enumerate(plan.pending):
        if not styles:
            continue
        src = plan.contents[ci]
        if src.path is None:
            raise UsageError("--ray cannot read a picture from stdin", hint="give files or folders on shared storage")
        names = {si: os.path.basename(os.fspath(plan.output_for(ci, si))) for si in styles}
        rows.append({"path": os.path.abspath(src.path), "display": src.display, "rel_dir": "/".join(src.rel_dir),
                     "stem": src.stem, "styles": json.dumps(list(styles)), "names": json.dumps(names)})
    return rows


def _row_event(row: dict[str, Any]) -> Event:
    def g(k: str) -> str | None:
        v = row.get(k)
        return None if v is None or v == "" else str(v)

    sec = row.get("seconds")
    return Event(str(row["kind"]), input=g("input"), style=g("style"), output=g("output"), message=g("message"),
                 error=g("error"), seconds=float(sec) if sec is not None and float(sec) >= 0 else None, hint=g("hint"))


def _pool(ray: Any, size: int) -> dict[str, Any]:
    """A fixed-size actor pool: ``compute=ActorPoolStrategy(size=N)`` (Ray ≥ 2.51), else ``concurrency=N``."""
    strategy = getattr(ray.data, "ActorPoolStrategy", None)
    if strategy is not None:
        try:
            return {"compute": strategy(size=size)}
        except TypeError:
            pass
    return {"concurrency": size}


def _run(ds: "ray.data.Dataset", plan: Plan, payloads: dict[int, dict[str, Any]], *, opts: RunOptions,
         engine_kwargs: dict[str, Any], concurrency: int | None, num_gpus_per_actor: float | None,
         rows_per_batch: int, overwrite: bool, emit: EventCallback) -> None:
    import ray

    res = ray.cluster_resources()
    n_gpu = float(res.get("GPU", 0.0))
    gpus = float(num_gpus_per_actor) if num_gpus_per_actor is not None else (1.0 if n_gpu >= 1 else 0.0)
    if concurrency is None:
        concurrency = max(1, int(n_gpu // gpus)) if gpus > 0 else max(1, int(res.get("CPU", 1.0)) // 2)
    kw = dict(engine_kwargs)
    if gpus == 0:
        kw.setdefault("device", "cpu")
    styles_ref = ray.put(payloads)
    style_sources = [(s.display, s.stem) for s in plan.styles]
    remote: dict[str, Any] = {"num_gpus": gpus} if gpus > 0 else {"num_cpus": 1}
    out = ds.map_batches(
        StylizeActor,
        fn_constructor_kwargs=dict(styles_ref=[styles_ref], style_sources=style_sources,
                                   out_dir=os.path.abspath(os.fspath(plan.outdir)), fmt=plan.fmt, ext=plan.ext,
                                   opts=opts, engine_kwargs=kw, overwrite=overwrite),
        batch_size=rows_per_batch, batch_format="numpy", **_pool(ray, concurrency), **remote,
    )
    for row in out.iter_rows():
        ev = _row_event(row)
        if ev.kind == "fatal":
            raise OutputError(ev.message or "cannot write the output", hint=ev.hint)
        emit(ev)


def stylize_plan(
    plan: Plan,
    *,
    address: str | None = "auto",
    opts: RunOptions | None = None,
    weights: str | os.PathLike[str] | None = None,
    precision: str = "auto",
    seed: int = 0,
    concurrency: int | None = None,
    num_gpus_per_actor: float | None = None,
    rows_per_batch: int = 16,
    style_device: str = "auto",
    on_event: EventCallback | None = None,
) -> Report:
    """Run a plan (from ``plan_jobs``) on a Ray cluster: the engine behind ``mambast stylize --ray ADDRESS``.

    Args:
        plan: the plan; inputs and the output folder must be paths every node can reach (shared storage).
        address: the cluster (``auto``: the running one, as ``ray start --head`` made; ``ray://HOST:10001``;
            ``local``: start a one-machine cluster here); ignored when this process is already connected.
        opts: run options (as for ``run_plan``; decode/write threads are per actor).
        weights: weights file every node can read (None: the bundled weights, installed on every node).
        precision: ``auto``, ``fp32`` or ``bf16``.
        seed: token-shuffle seed (same seed → same outputs).
        concurrency: actors in the pool (None: one per GPU of the cluster; on a CPU-only cluster, CPUs / 2).
        num_gpus_per_actor: GPUs each actor reserves (None: 1 if the cluster has GPUs, else 0 = CPU actors;
            0.5 puts two actors on one GPU).
        rows_per_batch: contents per actor call (each call runs the streaming pipeline over its rows).
        style_device: where the driver encodes the styles (``auto``: its GPU if it has one, else CPU).
        on_event: called on the driver, one event at a time: notes, skips, then one ``ok``/``error`` per item.

    Returns:
        The Report.

    Raises:
        UsageError: Ray is not installed, the cluster cannot be reached, or an input is stdin.
        WeightsError / DeviceError: the driver cannot build the style encoder.
        OutputError: an actor could not write to the output folder.
    """
    opts = opts or RunOptions()
    report = Report(planned=plan.n_pending)

    def emit(ev: Event) -> None:
        report.count(ev)
        if on_event is not None:
            on_event(ev)

    t0 = time.perf_counter()
    if plan.outdir is None:
        raise UsageError("--ray writes to an output folder, not to stdout")
    for ev in plan.start_events():
        emit(ev)
    if plan.n_pending:
        rows = plan_rows(plan)
        ray = _connect(address)
        engine_kwargs = dict(weights=os.fspath(weights) if weights else None, precision=precision, seed=seed)
        payloads, failed = encode_styles(plan, opts, engine_kwargs, device=style_device, on_event=emit)
        report.style_encodes = len(payloads)
        if failed:
            for ci, styles in enumerate(plan.pending):
                for si in styles:
                    if si in failed:
                        bad = failed[si]
                        emit(Event("error", input=plan.contents[ci].display, style=bad.style,
                                   output=os.fspath(plan.output_for(ci, si)), error=bad.error, message=bad.message,
                                   hint=bad.hint))
            for r in rows:
                r["styles"] = json.dumps([si for si in json.loads(r["styles"]) if si not in failed])
            rows = [r for r in rows if json.loads(r["styles"])]
        if rows:
            ds = ray.data.from_items(rows)
            try:
                _run(ds, plan, payloads, opts=opts, engine_kwargs=engine_kwargs, concurrency=concurrency,
                     num_gpus_per_actor=num_gpus_per_actor, rows_per_batch=rows_per_batch, overwrite=False,
                     emit=emit)
            except KeyboardInterrupt:
                report.interrupted = True
    report.elapsed_s = time.perf_counter() - t0
    return report


def stylize_dataset(
    ds: "ray.data.Dataset | Sequence[str] | str",
    style_paths: Sequence[str] | str,
    out_dir: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    num_gpus_per_actor: float | None = None,
    concurrency: int | None = None,
    opts: RunOptions | None = None,
    fmt: str = "jpg",
    overwrite: bool = False,
    precision: str = "auto",
    seed: int = 0,
    rows_per_batch: int = 16,
    address: str | None = None,
    on_event: EventCallback | None = None,
) -> Report:
    """Stylise every picture of a Ray Dataset (or a list of paths) with every style, on the cluster.

    Example:
        import ray, mambast_cli.ray as mr
        ray.init()                                                   # or address="auto"
        ds = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)
        report = mr.stylize_dataset(ds, ["/shared/art.jpg"], "/shared/out", concurrency=8)
        print(report.ok, report.failed)

    Args:
        ds: a Ray Dataset with a ``path`` column (and optionally ``bytes``, as ``read_binary_files(...,
            include_paths=True)`` makes; then the actors never open the path), or paths / folders / globs on
            shared storage (planned exactly like ``mambast stylize``: mirrored folders, de-duplicated names).
        style_paths: style image files (read on the driver only).
        out_dir: output folder every node can write; outputs are ``{stem}__{style-stem}.{ext}`` (with a Dataset:
            flat, or below an optional ``rel_dir`` column; existing outputs are skipped unless ``overwrite``).
        weights: weights file every node can read (None: the bundled weights).
        num_gpus_per_actor: GPUs per actor (None: 1 if the cluster has GPUs, else 0 = CPU actors).
        concurrency: actors in the pool (None: one per GPU of the cluster).
        opts: run options (size, max_side, alpha, ...).
        fmt: output format (jpg, png, webp).
        overwrite: redo outputs that exist.
        precision: ``auto``, ``fp32`` or ``bf16``.
        seed: token-shuffle seed.
        rows_per_batch: contents per actor call.
        address: cluster address when this process is not connected yet (None/``auto``: the running cluster).
        on_event: called on the driver for every event (progress).

    Returns:
        The Report (ok / failed / skipped counts and the error events).

    Raises:
        UsageError: Ray missing or unreachable, no style, bad format.
        WeightsError / DeviceError: the driver cannot build the style encoder.
        OutputError: an actor could not write to ``out_dir``.
    """
    styles = [style_paths] if isinstance(style_paths, (str, os.PathLike)) else list(style_paths)
    if isinstance(ds, (str, os.PathLike)):
        ds = [os.fspath(ds)]
    if isinstance(ds, (list, tuple)):
        plan = plan_jobs([os.fspath(p) for p in ds], [os.fspath(s) for s in styles], out_dir, fmt=fmt,
                         overwrite=overwrite)
        return stylize_plan(plan, address=address or "auto", opts=opts, weights=weights, precision=precision,
                            seed=seed, concurrency=concurrency, num_gpus_per_actor=num_gpus_per_actor,
                            rows_per_batch=rows_per_batch, on_event=on_event)
    # a Dataset: plan the styles only; contents stream from the cluster
    plan = plan_jobs([], [os.fspath(s) for s in styles], out_dir, fmt=fmt, overwrite=overwrite)
    plan = Plan(plan.outdir, [], plan.styles, plan.ext, fmt=plan.fmt, pending=[tuple(range(len(plan.styles)))],
                notes=[n for n in plan.notes if n.kind != "note"])
    report = Report()

    def emit(ev: Event) -> None:
        report.count(ev)
        if on_event is not None:
            on_event(ev)

    t0 = time.perf_counter()
    for ev in plan.notes:
        emit(ev)
    _connect(address)
    os.makedirs(os.fspath(out_dir), exist_ok=True)
    opts = opts or RunOptions()
    engine_kwargs = dict(weights=os.fspath(weights) if weights else None, precision=precision, seed=seed)
    payloads, failed = encode_styles(plan, opts, engine_kwargs, on_event=emit)
    report.style_encodes = len(payloads)
    if not payloads:
        raise UsageError("no usable style", hint="check the --style files")
    try:
        _run(ds, plan, payloads, opts=opts, engine_kwargs=engine_kwargs, concurrency=concurrency,
             num_gpus_per_actor=num_gpus_per_actor, rows_per_batch=rows_per_batch, overwrite=overwrite,
             emit=emit)
    except KeyboardInterrupt:
        report.interrupted = True
    report.planned = report.ok + report.failed
    report.elapsed_s = time.perf_counter() - t0
    return report


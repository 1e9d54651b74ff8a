"""Tests for mambast_cli.pipeline: planning, skipping, batching, OOM back-off, failures, interruption, the Report."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mambast_cli.errors import OutputError, UsageError
from mambast_cli.pipeline import Event, RunOptions, plan_jobs, run_plan
from mambast_cli.pipeline.fake import FakeEngine

OPTS = RunOptions(size=0, max_side=0, decode_workers=2, write_workers=2, fsync=False)


def _run(plan: Any, engine: Any = None, opts: RunOptions = OPTS, **kw: Any) -> tuple[Any, list[Event]]:
    events: list[Event] = []
    report = run_plan(plan, engine or FakeEngine(), opts, on_event=events.append, **kw)
    return report, events


def _parts(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".part-" in p.name]


# -- planning ------------------------------------------------------------------------------------------------
def test_plan_mirrors_folders_and_names_outputs(tmp_path: Path, make_image: Any) -> None:
    make_image("in/a.jpg")
    make_image("in/deep/er/b.png")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    make_image("in/.hidden.jpg")
    s1, s2 = make_image("s/one.jpg"), make_image("s/two.png")
    plan = plan_jobs([str(tmp_path / "in")], [str(s1), str(s2)], tmp_path / "out")
    outs = sorted(os.path.relpath(plan.output_for(ci, si), tmp_path / "out") for ci, si in plan.jobs())
    assert outs == ["a__one.jpg", "a__two.jpg", "deep/er/b__one.jpg", "deep/er/b__two.jpg"]
    assert plan.n_pending == 4 and plan.n_done == 0


def test_plan_deduplicates_colliding_outputs_deterministically(tmp_path: Path, make_image: Any) -> None:
    make_image("in/a.jpg")
    make_image("in/a.png")
    make_image("in/A.webp")
    s = make_image("s.jpg")
    names = []
    for _ in range(2):
        plan = plan_jobs([str(tmp_path / "in")], [str(s)], tmp_path / "out", fmt="png")
        names.append([plan.output_for(ci, si).name for ci, si in plan.jobs()])
    assert names[0] == names[1]
    assert names[0] == ["A__s.png", "a__s_2.png", "a__s_3.png"]  # sorted input order; case-insensitive collisions


def test_plan_skips_existing_and_inputs_inside_output(tmp_path: Path, make_image: Any) -> None:
    make_image("in/a.jpg")
    make_image("in/b.jpg")
    s = make_image("s.jpg")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a__s.jpg").write_bytes(b"done")
    inside = make_image("out/old.jpg")
    plan = plan_jobs([str(tmp_path / "in"), str(inside)], [str(s)], out)
    assert plan.n_pending == 1 and plan.n_done == 1
    assert [e.kind for e in plan.notes] == ["skipped"]
    plan2 = plan_jobs([str(tmp_path / "in")], [str(s)], out, overwrite=True)
    assert plan2.n_pending == 2


def test_plan_output_folder_inside_input_folder_is_not_walked(tmp_path: Path, make_image: Any) -> None:
    make_image("in/a.jpg")
    make_image("in/out/zzz.jpg")
    s = make_image("s.jpg")
    plan = plan_jobs([str(tmp_path / "in")], [str(s)], tmp_path / "in" / "out")
    assert [c.display for c in plan.contents] == [str(tmp_path / "in" / "a.jpg")]
    assert plan.n_done == 0 and plan.n_pending == 1


def test_plan_walk_does_not_block_on_a_fifo_without_an_image_extension(tmp_path: Path, make_image: Any) -> None:
    make_image("in/a.jpg")
    fifo = tmp_path / "in" / "pipe"
    os.mkfifo(fifo)
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(plan_jobs([str(tmp_path / "in")], [str(tmp_path / "in")], tmp_path / "out")),
                         daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # unblock the sniffing open() so the thread can end, then fail
        with open(fifo, "wb"):
            pass
        t.join(10)
        pytest.fail("planning blocked on a FIFO in the input folder")
    [plan] = got
    assert [os.path.basename(c.display) for c in plan.contents] == ["a.jpg"]
    assert [os.path.basename(st.display) for st in plan.styles] == ["a.jpg"]  # the style walk too


def test_plan_globs_missing_inputs_and_duplicates(tmp_path: Path, make_image: Any) -> None:
    a = make_image("in/x/a.jpg")
    make_image("in/y/b.jpg")
    s = make_image("s.jpg")
    plan = plan_jobs([str(tmp_path / "in" / "**" / "*.jpg"), str(a), str(tmp_path / "missing.jpg"),
                      str(tmp_path / "nomatch*.png")], [str(s)], tmp_path / "out")
    rel = sorted(os.path.relpath(plan.output_for(ci, si), tmp_path / "out") for ci, si in plan.jobs())
    assert rel == ["x/a__s.jpg", "y/b__s.jpg"]  # glob mirrors below its fixed prefix; a.jpg planned once
    assert sorted(e.message for e in plan.notes) == ["no such file or folder", "pattern matched no files"]


def test_plan_stdout_needs_one_job(tmp_path: Path, make_image: Any) -> None:
    a, b, s = make_image("a.jpg"), make_image("b.jpg"), make_image("s.jpg")
    assert plan_jobs([str(a)], [str(s)], None).n_pending == 1
    with pytest.raises(UsageError):
        plan_jobs([str(a), str(b)], [str(s)], None)
    with pytest.raises(UsageError):
        plan_jobs([str(a)], [], tmp_path)


# -- running -------------------------------------------------------------------------------------------------
def test_run_writes_everything_and_reports(tmp_path: Path, make_image: Any) -> None:
    for i in range(6):
        make_image(f"in/{i}.jpg", size=(32 + 8 * (i % 2), 24), noise=True)
    s1, s2 = make_image("s1.png", color=(0, 0, 255)), make_image("s2.png", color=(0, 255, 0))
    plan = plan_jobs([str(tmp_path / "in")], [str(s1), str(s2)], tmp_path / "out")
    eng = FakeEngine()
    report, events = _run(plan, eng, RunOptions(size=0, max_side=0, batch_size=2, fsync=False))
    assert (report.ok, report.failed, report.skipped) == (12, 0, 0)
    assert report.success and report.elapsed_s > 0 and report.images_per_s > 0
    assert eng.stats["style_encodes"] == 2 and report.style_encodes == 2  # each style encoded once per run
    assert max(eng.calls) <= 2 and sum(eng.calls) == 12
    assert len(list((tmp_path / "out").glob("*.jpg"))) == 12 and not _parts(tmp_path)
    assert {e.kind for e in events} == {"ok"}
    # rerun: everything is skipped, the engine is never called
    report2, _ = _run(plan_jobs([str(tmp_path / "in")], [str(s1), str(s2)], tmp_path / "out"), None)
    assert (report2.ok, report2.skipped) == (0, 12)


def test_batches_group_by_size(tmp_path: Path, make_image: Any) -> None:
    for i in range(8):
        make_image(f"in/{i}.png", size=(40, 30) if i % 2 else (30, 40))
    s = make_image("s.png")
    eng = FakeEngine()
    report, _ = _run(plan_jobs([str(tmp_path / "in")], [str(s)], tmp_path / "out"), eng,
                     RunOptions(size=0, max_side=0, batch_size=4, fsync=False))
    assert report.ok == 8 and eng.calls == [4, 4]


def test_outputs_are_deterministic(tmp_path: Path, make_image: Any) -> None:
    for i in range(5):
        make_image(f"in/{i}.png", size=(20 + i, 20), noise=True)
    s = make_image("s.png", noise=True)
    for out in ("o1", "o2"):
        _run(plan_jobs([str(tmp_path / "in")], [str(s)], tmp_path / out, fmt="png"), FakeEngine(seed=3))
    for p in (tmp_path / "o1").iterdir():
        assert p.read_bytes() == (tmp_path / "o2" / p.name).read_bytes()


def test_oom_splits_the_batch_and_retries(tmp_path: Path, make_image: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(8):
        make_image(f"in/{i}.png")
    s = make_image("s.png")
    monkeypatch.setenv("MAMBAST_FAKE_OOM_ABOVE", "2")
    eng = FakeEngine("oom")
    report, _ = _run(plan_jobs([str(tmp_path / "in")], [str(s)], tmp_path / "out"), eng,
                     RunOptions(size=0, max_side=0, batch_size=8, fsync=False))
    assert report.ok == 8 and report.failed == 0
    assert max(eng.calls) <= 2 and sum(eng.calls) == 8
    assert report.batch_sizes == {2: 4}


def test_oom_at_batch_one_fails_only_that_item(tmp_path: Path, make_image: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    make_image("in/a.png")
    s = make_image("s.png")
    monkeypatch.setenv("MAMBAST_FAKE_OOM_ABOVE", "0")
    report, events = _run(plan_jobs([str(tmp_path / "in")], [str(s)], tmp_path / "out"), FakeEngine("oom"))
    assert report.failed == 1 and events[-1].error == "DeviceError" and "out of memory" in (events[-1].message or "")


def test_corrupt_style_fails_only_its_items(tmp_path: Path, make_image: Any) -> None:
    make_image("in/a.jpg")
    make_image("in/b.jpg")
    good = make_image("good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    report, events = _run(plan_jobs([str(tmp_path / "in")], [str(good), str(bad)], tmp_path / "out"))
    assert (report.ok, report.failed) == (2, 2)
    assert all(e.style == str(bad) for e in events if e.kind == "error")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a__good.jpg", "b__good.jpg"]


def test_bad_content_fails_only_itself(tmp_path: Path, make_image: Any) -> None:
    make_image("in/a.jpg")
    (tmp_path / "in" / "b.jpg").write_text("text, not a JPEG")
    make_image("in/c.jpg")
    s = make_image("s.png")
    report, events = _run(plan_jobs([str(tmp_path / "in")], [str(s)], tmp_path / "out"))
    assert (report.ok, report.failed) == (2, 1)
    [err] = report.errors
    assert err.input and err.input.endswith("b.jpg") and err.error == "InputError"


def test_output_error_stops_the_run(tmp_path: Path, make_image: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    for i in range(6):
        make_image(f"in/{i}.jpg")
    s = make_image("s.png")
    plan = plan_jobs([str(tmp_path / "in")], [str(s)], tmp_path / "out")

    def erofs(src: str, dst: str) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "replace", erofs)
    with pytest.raises(OutputError, match="Read-only"):
        _run(plan)
    assert not _parts(tmp_path)


def test_keyboard_interrupt_stops_cleanly(tmp_path: Path, make_image: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(10):
        make_image(f"in/{i}.jpg")
    s = make_image("s.png")
    monkeypatch.setenv("MAMBAST_FAKE_INTERRUPT_AFTER", "3")
    report, _ = _run(plan_jobs([str(tmp_path / "in")], [str(s)], tmp_path / "out"), FakeEngine("interrupt"),
                     RunOptions(size=0, max_side=0, batch_size=1, fsync=False))
    assert report.interrupted and not report.success
    assert report.ok == 3 and len(list((tmp_path / "out").iterdir())) == 3
    assert not _parts(tmp_path)


def test_stop_event_stops_feeding(tmp_path: Path, make_image: Any) -> None:
    for i in range(20):
        make_image(f"in/{i:02d}.jpg")
    s = make_image("s.png")
    stop = threading.Event()
    count = {"n": 0}

    def on_event(ev: Event) -> None:
        count["n"] += 1
        if count["n"] == 2:
            stop.set()

    report = run_plan(plan_jobs([str(tmp_path / "in")], [str(s)], tmp_path / "out"), FakeEngine(),
                      RunOptions(size=0, max_side=0, batch_size=1, fsync=False), on_event=on_event, stop=stop)
    assert report.interrupted and report.ok < 20


def test_many_files_with_small_queues(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    tiny = Image.new("RGB", (16, 16), (1, 2, 3))
    for i in range(150):
        tiny.save(src / f"{i:03d}.png")
    s = tmp_path / "s.png"
    tiny.save(s)
    report, _ = _run(plan_jobs([str(src)], [str(s)], tmp_path / "out", fmt="png"), FakeEngine(),
                     RunOptions(size=0, max_side=0, batch_size=4, queue_size=4, decode_workers=2, write_workers=1,
                                fsync=False))
    assert report.ok == 150


def test_stdout_sink(tmp_path: Path, make_image: Any) -> None:
    a, s = make_image("a.png"), make_image("s.png")
    got: list[bytes] = []
    report, events = _run(plan_jobs([str(a)], [str(s)], None, fmt="png"), None, stdout_sink=got.append)
    assert report.ok == 1 and got[0].startswith(b"\x89PNG") and events[0].output == "-"


def test_style_dependent_output(tmp_path: Path, make_image: Any) -> None:
    a = make_image("a.png", color=(128, 128, 128))
    s = make_image("s.png", color=(255, 0, 0))
    _run(plan_jobs([str(a)], [str(s)], tmp_path / "out", fmt="png"))
    px = np.asarray(Image.open(tmp_path / "out" / "a__s.png"))[0, 0]
    assert px[0] > px[1] + 50  # the fake engine pulls towards the style's red


def test_style_inside_output_is_never_overwritten(tmp_path: Path, make_image: Any) -> None:
    a = make_image("x.jpg")
    s = make_image("out/y.png")
    trap = make_image("out/x__y.jpg")  # the output name x × y would land on this style file
    before = trap.read_bytes()
    plan = plan_jobs([str(a)], [str(s), str(trap)], tmp_path / "out", overwrite=True)
    report, events = _run(plan)
    assert trap.read_bytes() == before
    assert any(e.kind == "skipped" and "style image" in (e.message or "") for e in events)


def test_uint8_device_path_writes_the_same_bytes(tmp_path: Path, make_image: Any, monkeypatch) -> None:
    """The CUDA-engine path (pictures as uint8, converted on the device, `upload_frames`/`_download`) gives the same output
    bytes as the CPU path (float tensors converted in the decode/write threads); forced here on a CPU engine."""
    import torch

    from mambast_cli.engine import Engine
    from mambast_cli.model import MambaST, tiny_config
    from mambast_cli.pipeline import run as prun

    for i, size in enumerate([(40, 24), (40, 24), (24, 40)]):                    # two buckets
        make_image(f"in/p{i}.png", size=size, noise=True)
    s = make_image("art.png", size=(32, 32), noise=True)
    torch.manual_seed(0)
    eng = Engine(model=MambaST(tiny_config()), device="cpu", disk_cache=False)
    outs = {}
    staged: list[int] = []
    real_empty = prun._pinned_empty
    for mode in ("float", "uint8", "uint8 staged", "uint8 staged np"):
        monkeypatch.setattr(prun, "_is_cuda", lambda d, on=mode != "float": on)
        if mode.startswith("uint8 staged"):   # the pinned staging buffers (CUDA), with plain host memory standing in
            monkeypatch.setattr(prun, "_pinned_empty",
                                lambda n: staged.append(n) or torch.empty(n, dtype=torch.uint8))
        out = tmp_path / mode.replace(" ", "_")
        report, _ = _run(plan_jobs([str(tmp_path / "in")], [str(s)], out, fmt="png"), eng,
                         RunOptions(size=0, max_side=0, batch_size=1, decode_workers=2, write_workers=2, fsync=False,
                                    stack_with_torch=not mode.endswith(" np")))
        assert report.success and report.ok == 3
        outs[mode] = {p.name: p.read_bytes() for p in sorted(out.rglob("*.png"))}
    monkeypatch.setattr(prun, "_pinned_empty", real_empty)
    assert len(outs["uint8"]) == 3
    assert outs["uint8"] == outs["float"] == outs["uint8 staged"] == outs["uint8 staged np"]
    assert len(staged) == 4          # per run: two buffers, used in turn, allocated once each (same size)


def test_uint8_device_path_splits_a_batch_on_out_of_memory(tmp_path: Path, make_image: Any, monkeypatch) -> None:
    import torch

    from mambast_cli.engine import Engine
    from mambast_cli.model import MambaST, tiny_config
    from mambast_cli.pipeline import run as prun

    for i in range(3):
        make_image(f"in/p{i}.png", size=(40, 24), noise=True)
    s = make_image("art.png", size=(32, 32), noise=True)
    eng = Engine(model=MambaST(tiny_config()), device="cpu", disk_cache=False)
    monkeypatch.setattr(prun, "_is_cuda", lambda d: True)
    real = prun.upload_frames

    def upload(pixels, device, pinned=None):
        if len(pixels) > 1:
            raise torch.OutOfMemoryError("fake OOM while uploading")
        return real(pixels, device, pinned=pinned)

    monkeypatch.setattr(prun, "upload_frames", upload)
    report, _ = _run(plan_jobs([str(tmp_path / "in")], [str(s)], tmp_path / "out", fmt="png"), eng,
                     RunOptions(batch_size=4))
    assert report.success and report.ok == 3 and set(report.batch_sizes) == {1}


@pytest.mark.parametrize("device_path", [False, True])
def test_several_styles_share_the_content_side(tmp_path: Path, make_image: Any, monkeypatch, device_path) -> None:
    """Contents × several styles: each batch's content side runs once (`Engine.stylize_many`), with the bytes of
    one run per style; an out-of-memory part way through redoes only the styles not yet written."""
    import torch

    from mambast_cli.engine import Engine
    from mambast_cli.model import MambaST, tiny_config
    from mambast_cli.pipeline import run as prun

    for i in range(3):
        make_image(f"in/p{i}.png", size=(40, 24), noise=True)
    styles = [str(make_image(f"art{k}.png", size=(32, 32), noise=True)) for k in range(3)]
    torch.manual_seed(0)
    eng = Engine(model=MambaST(tiny_config()), device="cpu", disk_cache=False)
    monkeypatch.setattr(prun, "_is_cuda", lambda d: device_path)
    opts = RunOptions(size=0, max_side=0, batch_size=4, fsync=False)
    one = {}
    for k, st in enumerate(styles):                      # the reference: one style per run
        _run(plan_jobs([str(tmp_path / "in")], [st], tmp_path / f"one{k}", fmt="png"), eng, opts)
        one.update({p.name: p.read_bytes() for p in (tmp_path / f"one{k}").rglob("*.png")})
    encodes: list[int] = []
    real_encode = eng._encode_content
    monkeypatch.setattr(eng, "_encode_content", lambda t: encodes.append(t.shape[0]) or real_encode(t))
    report, _ = _run(plan_jobs([str(tmp_path / "in")], styles, tmp_path / "all", fmt="png"), eng, opts)
    assert report.success and report.ok == 9
    assert encodes == [3]                                # one batch of 3 contents, encoded once for 3 styles
    got = {p.name: p.read_bytes() for p in (tmp_path / "all").rglob("*.png")}
    assert got == one and len(got) == 9
    report, _ = _run(plan_jobs([str(tmp_path / "in")], styles, tmp_path / "b1", fmt="png"), eng,
                     RunOptions(size=0, max_side=0, batch_size=1, fsync=False))     # 3 batches, styles back and forth
    assert report.success and {p.name: p.read_bytes() for p in (tmp_path / "b1").rglob("*.png")} == one

    real_decode, calls = eng._decode_shared, []

    def flaky(shared, style, *a):                        # the third style runs out of memory in the shared pass
        calls.append(1)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("simulated")
        return real_decode(shared, style, *a)

    monkeypatch.setattr(eng, "_decode_shared", flaky)
    report, events = _run(plan_jobs([str(tmp_path / "in")], styles, tmp_path / "oom", fmt="png"), eng, opts)
    assert report.success and report.ok == 9 and sum(e.kind == "ok" for e in events) == 9   # nothing twice
    assert {p.name: p.read_bytes() for p in (tmp_path / "oom").rglob("*.png")} == one

    monkeypatch.setattr(eng, "_decode_shared", real_decode)
    real_many = eng.stylize_many

    def oom_after_first(x, handles, **kw):               # escapes the engine: the pipeline splits the batch
        if x.shape[0] > 1:
            results = real_many(x, handles, **kw)
            yield next(results)
            raise torch.OutOfMemoryError("simulated")
        yield from real_many(x, handles, **kw)

    monkeypatch.setattr(eng, "stylize_many", oom_after_first)
    report, events = _run(plan_jobs([str(tmp_path / "in")], styles, tmp_path / "split", fmt="png"), eng, opts)
    assert report.success and report.ok == 9 and sum(e.kind == "ok" for e in events) == 9
    assert {p.name: p.read_bytes() for p in (tmp_path / "split").rglob("*.png")} == one


# -- the engine thread, back-pressure and stage times ----------------------------------------------------------
class _WatchedEngine(FakeEngine):
    """Records which threads call stylize and whether two calls ever overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()
        self.active = 0
        self.overlapped = False
        self.guard = threading.Lock()

    def stylize(self, *a: Any, **k: Any) -> Any:
        with self.guard:
            self.active += 1
            self.overlapped |= self.active > 1
            self.threads.add(threading.get_ident())
        try:
            return super().stylize(*a, **k)
        finally:
            with self.guard:
                self.active -= 1


def test_one_engine_thread_in_plan_order_with_stage_times(tmp_path: Path, make_image: Any) -> None:
    for i in range(12):
        make_image(f"in/{i:02d}.png", size=(24, 16), noise=True)
    s = make_image("s.png")
    eng = _WatchedEngine()
    report, _ = _run(plan_jobs([str(tmp_path / "in")], [str(s)], tmp_path / "out"), eng,
                     RunOptions(size=0, max_side=0, batch_size=3, fsync=False))
    assert report.ok == 12 and eng.calls == [3, 3, 3, 3]
    assert len(eng.threads) == 1 and threading.get_ident() not in eng.threads and not eng.overlapped
    st = report.to_dict()["stages_s"]
    assert {"decode_busy", "engine_busy", "write_busy", "decode_wait"} <= set(st)
    assert all(v >= 0 for v in st.values()) and st["engine_busy"] > 0


def test_a_bug_in_the_engine_thread_reaches_the_caller(tmp_path: Path, make_image: Any) -> None:
    for i in range(4):
        make_image(f"in/{i}.png")
    s = make_image("s.png")

    class Broken(FakeEngine):
        def stylize(self, *a: Any, **k: Any) -> Any:
            raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        _run(plan_jobs([str(tmp_path / "in")], [str(s)], tmp_path / "out"), Broken(),
             RunOptions(size=0, max_side=0, batch_size=2, fsync=False))
    assert not _parts(tmp_path) and not list((tmp_path / "out").glob("*.jpg"))


def test_write_budget_blocks_by_bytes_but_always_lets_one_through() -> None:
    from mambast_cli.pipeline.run import _BytesBudget

    b = _BytesBudget(100)
    assert b.acquire(500, lambda: False)             # larger than the limit, but nothing waits: let through
    assert not b.acquire(10, lambda: True)           # full: gives up when asked to
    b.release(500)
    assert b.acquire(60, lambda: False) and b.acquire(40, lambda: False)
    done = threading.Event()
    t = threading.Thread(target=lambda: b.acquire(1, lambda: False) and done.set())
    t.start()
    assert not done.wait(0.3)                        # 100 of 100 used: blocks
    b.release(60)
    assert done.wait(2.0)
    t.join()


def test_an_error_while_handing_results_to_the_writers_stops_the_run(tmp_path: Path, make_image: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatcher thread (results → writers) failing, e.g. a CUDA error surfacing while it waits for a copy, stops
    the run with that error instead of leaving the engine thread waiting for write budget."""
    from mambast_cli.pipeline import run as prun

    for i in range(6):
        make_image(f"in/{i}.png")
    s = make_image("s.png")

    def broken(*a: Any, **k: Any) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(prun, "_wait_event", broken)       # only reached with a CUDA event; force it below
    real = prun._Runner.submit_writes
    monkeypatch.setattr(prun._Runner, "submit_writes",
                        lambda self, chunk, out, si, ready=None: real(self, chunk, out, si, object()))
    with pytest.raises(RuntimeError, match="illegal memory access"):
        _run(plan_jobs([str(tmp_path / "in")], [str(s)], tmp_path / "out"), FakeEngine(),
             RunOptions(size=0, max_side=0, batch_size=2, fsync=False))
    assert not _parts(tmp_path)

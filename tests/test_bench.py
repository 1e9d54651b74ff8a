"""`mambast bench` on CPU with the tiny model: every section runs and the JSON/text outputs hold together."""
from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from mambast_cli.engine.bench import benchmark, format_report
from mambast_cli.pipeline.bench import bench_command, folder_benchmark, steady_rate


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """2 shared CPU cores: one intra-op thread is far faster than two fighting other processes."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_benchmark_tiny_cpu_sections():
    r = benchmark(tiny=True, device="cpu", repeats=1, sizes=(32,), n_contents=2, protocol=(1, 2), uhd=(40, 72),
                  curve=(32,))
    assert r["meta"]["device"] == "cpu" and "random weights" in r["meta"]["weights_note"]
    (row,) = r["rows"]
    assert row["size"] == "32x32" and row["engine_ms_per_img"] > 0 and row["baseline_ms_per_img"] > 0
    assert row["speedup"] > 0 and row["engine_batch"] >= 1
    p = r["protocol"]
    assert p["pairs"] == 2 and p["baseline_wall_s"] > 0
    first, second, per_style = p["engine_runs"]
    assert first["style_encodes"] == 2 and first["style_cache_hits_disk"] == 0
    assert second["style_encodes"] == 0 and second["style_cache_hits_disk"] == 2     # disk cache across "runs"
    assert per_style["style_cache_hits_disk"] == 2 and per_style["wall_s"] > 0       # the content side per pair
    assert r["uhd"]["size"] == "72x40" and r["uhd"]["engine_ms"] > 0
    assert r["curve"][0]["pixels"] == 32 * 32
    ex = r["extras"]
    assert ex["style_disk_hit"] is True and ex["style_encode_ms"] > 0
    text = format_report(r)
    assert "32x32" in text and "protocol 1 contents x 2 styles" in text and "random weights" in text
    json.dumps(r)                                          # serialisable as is


def test_bench_command_json_without_baseline():
    app = typer.Typer()
    app.command("bench")(bench_command)
    app.command("other")(lambda: None)                    # keep "bench" a real subcommand
    res = CliRunner().invoke(app, ["bench", "--tiny", "--device", "cpu", "--json", "--sizes", "32", "--contents", "1",
                                   "--protocol", "0x0", "--large", "0x0", "--curve", "none", "--repeats", "1",
                                   "--no-baseline"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["protocol"] is None and r["uhd"] is None and r["curve"] == []
    assert "baseline_ms_per_img" not in r["rows"][0] and r["rows"][0]["engine_ms_per_img"] > 0


def test_folder_row_tiny_cpu(tmp_path):
    """The end-to-end folder row: synthetic JPEGs through run_plan, every output written, rates reported."""
    from mambast_cli.engine import Engine
    from mambast_cli.model import MambaST, tiny_config

    torch.manual_seed(0)
    eng = Engine(model=MambaST(tiny_config()), device="cpu", disk_cache=False)
    r = folder_benchmark(eng, n=6, size=32, warmup=2, workdir=tmp_path)
    assert r["images"] == 6 and r["ok"] == 6 and r["failed"] == 0 and r["wall_img_s"] > 0 and not r["errors"]
    assert len(list((tmp_path / "out").rglob("*.jpg"))) == 6 and len(list((tmp_path / "warmup").rglob("*.jpg"))) == 2
    assert steady_rate([0.0, 1.0, 2.0]) == 1.5 and steady_rate([float(i) for i in range(100)]) == 1.0


def test_bench_command_folder_only():
    app = typer.Typer()
    app.command("bench")(bench_command)
    app.command("other")(lambda: None)
    res = CliRunner().invoke(app, ["bench", "--tiny", "--device", "cpu", "--json", "--no-engine-rows", "--folder", "3",
                                   "--folder-size", "32"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert list(r) == ["folder"] and r["folder"]["ok"] == 3


def test_bench_command_folder_errors(tmp_path):
    """A missing --images folder is one error line (exit 2); a bad picture in it fails alone, is listed, exit 1."""
    import shutil
    from pathlib import Path

    app = typer.Typer()
    app.command("bench")(bench_command)
    app.command("other")(lambda: None)
    args = ["bench", "--tiny", "--device", "cpu", "--no-engine-rows", "--folder-size", "32"]
    res = CliRunner().invoke(app, args + ["--images", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "not a folder" in res.output and "Traceback" not in res.output
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.jpg").write_bytes(b"junk")
    shutil.copy(Path(__file__).resolve().parents[1] / "examples/content/monkey.jpg", tmp_path / "in" / "ok.jpg")
    res = CliRunner().invoke(app, args + ["--images", str(tmp_path / "in")])
    assert res.exit_code == 1 and "1 written, 1 failed" in res.output and "bad.jpg" in res.output


def test_profile_engine_counts_device_events_only():
    """scripts/profile_engine.py sums kernels, not the operators above them: an operator's entry carries its
    kernels' device time too, and counting both counted each kernel once per level of its call stack."""
    import importlib.util
    from pathlib import Path
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    path = Path(__file__).resolve().parents[1] / "scripts" / "profile_engine.py"
    spec = importlib.util.spec_from_file_location("profile_engine", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ev = lambda key, dev, us, n: SimpleNamespace(key=key, device_type=dev, device_time_total=us, count=n)  # noqa: E731
    averages = [ev("aten::conv2d", DeviceType.CPU, 3000.0, 4), ev("aten::cudnn_convolution", DeviceType.CPU, 3000.0, 4),
                ev("sm90_xmma_fprop_implicit_gemm", DeviceType.CUDA, 3000.0, 4),
                ev("_seq_fwd_kernel", DeviceType.CUDA, 5000.0, 12), ev("aten::copy_", DeviceType.CPU, 800.0, 2),
                ev("Memcpy DtoH (Device -> Pinned)", DeviceType.CUDA, 800.0, 2)]
    per, kernels = mod.kernel_times(averages, images=4, steps=2)
    assert per == {"convolution": 0.75, "scan forward": 1.25, "host <-> device copies": 0.2}
    assert [k[1] for k in kernels] == ["_seq_fwd_kernel", "sm90_xmma_fprop_implicit_gemm",
                                       "Memcpy DtoH (Device -> Pinned)"]
    assert kernels[0][2] == 6


def test_sass_loop_reads_the_loop_its_loads_and_their_copies():
    """scripts/sass_loop.py (session 10's SASS readings): the longest backward branch is the loop; a MOV of a
    register loaded earlier in the trip is a copy; load-to-use distances go round the loop."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "sass_loop.py"
    spec = importlib.util.spec_from_file_location("sass_loop", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sass = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_1:
        /*0010*/                   LDG.E.64 R4, desc[UR6][R2.64] ;
        /*0020*/                   FMUL R8, R8, R9 ;
        /*0030*/                   FFMA R8, R4, R9, R8 ;
        /*0040*/              @!P2 LDG.E.U16 R10, desc[UR6][R2.64] ;
        /*0050*/                   MOV R11, R10 ;
        /*0060*/               @P1 BRA `(.L_x_1) ;
        /*0070*/                   EXIT ;
"""
    r = mod.loop_report(sass)
    assert r["instructions"] == 6 and r["ops"]["LDG"] == 2 and r["ops"]["FFMA"] == 1
    assert r["copies"] == ["MOV R11, R10"]
    assert sorted(r["load_to_use"]) == [1, 2]

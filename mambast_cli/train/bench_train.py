"""Training throughput benchmark: it/s and images/s of the real train step at 256², batch 8 per GPU.

Runs the same step as `loop.train` (three fused passes, the losses with the real loss network, backward, the
gradient all-reduce under torchrun, Adam) on synthetic in-memory images, so the data loader is not measured.
Prints one JSON line (rank 0). Warm-up steps (cudnn autotuning, Triton compilation) are timed separately.

    python -m mambast_cli.train.bench_train                       # 1 GPU
    torchrun --nproc_per_node=4 -m mambast_cli.train.bench_train  # 4 GPUs, batch 8 each
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark. Returns the result dict (also printed as JSON on rank 0)."""
    from mambast_cli.train.loop import _average_grads, build_model, setup_dist, three_passes
    from mambast_cli.train.losses import StyleLosses
    from mambast_cli.train.lossnet import load_loss_net

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--config", default="default")
    ap.add_argument("--loss-net", default="effnet-lite0")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-fuse", action="store_true")
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="after the timed steps, profile this many steps and print the top CUDA kernels (rank 0)")
    a = ap.parse_args(argv)

    dist, dev = setup_dist(a.device)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = build_model(a.config).to(dev)
    model.reset_parameters()
    model.train()
    losses = StyleLosses(load_loss_net(a.loss_net).to(dev))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4, fused=dev.type == "cuda")
    amp = dev.type == "cuda" and not a.no_amp
    c = torch.rand(a.batch_size, 3, a.size, a.size, device=dev)
    s = torch.rand(a.batch_size, 3, a.size, a.size, device=dev)

    def step(i: int) -> None:
        gens = [torch.Generator().manual_seed(i * 3 + k) for k in range(3)]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            ics, icc, iss = three_passes(model, c, s, gens, fuse=not a.no_fuse)
            total = losses(ics, icc, iss, c, s)["total"]
        opt.zero_grad(set_to_none=True)
        total.backward()
        if dist.world > 1:
            _average_grads(params, dist.world)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if dist.world > 1:
            torch.distributed.barrier()

    sync()
    t0 = time.perf_counter()
    for i in range(a.warmup):
        step(i)
    sync()
    t1 = time.perf_counter()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for i in range(a.steps):
        step(a.warmup + i)
    sync()
    t2 = time.perf_counter()
    it_s = a.steps / (t2 - t1)
    res = {"gpus": dist.world, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
           "batch_per_gpu": a.batch_size, "size": a.size, "config": a.config, "loss_net": a.loss_net,
           "fused": not a.no_fuse, "bf16": amp, "warmup_s": round(t1 - t0, 2), "it_s": round(it_s, 3),
           "img_s": round(it_s * a.batch_size * dist.world, 1), "ms_per_step": round(1000 / it_s, 1),
           "peak_mem_gb": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None,
           "torch": torch.__version__}
    if dist.main:
        print(json.dumps(res), flush=True)
    if a.profile and dist.main and dev.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for i in range(a.profile):
                step(a.warmup + a.steps + i)
            sync()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60), flush=True)
    if dist.world > 1:
        torch.distributed.destroy_process_group()
    return res


if __name__ == "__main__":
    main()

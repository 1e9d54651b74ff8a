#!/usr/bin/env bash
# Session 3, last lease (nvidia-h100-x1): one content at 512² with the segmented candidates (the decoder-form ratio's
# denominator, on the same card as the G=8 row), then 1080p video end to end with the fused epilogue now on by default.
# Random weights for the video (speed does not depend on them). Carry: the av wheel, with the bundled weights kept out
# of the tree for this call (tracked weights + wheel exceed the 64 MiB limit).
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index .whl/av-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
timeout 90 python3 kernels/bench.py --only "enc 512 B1 bf16 cl|dec 512 G8 bf16 cl" --out $OUT/bench_g.json 2>&1 | grep -A8 "^row " | cut -c1-150
timeout 280 python3 scripts/bench_video.py --frames 96 --presets superfast ultrafast --smooth 4 --json-out $OUT/bench_video3.json 2>&1 | tail -16

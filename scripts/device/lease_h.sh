#!/usr/bin/env bash
# Session 3, final lease (nvidia-h100-x1, ~3 min): 256² rows now that the segmented candidates start at L = 1024,
# then 1080p video end to end after the video job moved its pre/post-processing to the GPU (uint8 upload from one
# pinned buffer, smoothing and the uint8 conversion on the GPU). Random weights for the video. Carry: the av wheel,
# with the bundled weights kept out of the tree for this call.
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index .whl/av-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
timeout 60 python3 kernels/bench.py --only "v2 L 256 B1|v2 dec 256 G64|v2 enc 256 B64" --out $OUT/bench_h.json 2>&1 | grep -A8 "^row " | cut -c1-150
timeout 200 python3 scripts/bench_video.py --frames 480 --presets superfast --smooth 0 4 --json-out $OUT/bench_video5.json 2>&1 | tail -8

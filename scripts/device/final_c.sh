#!/usr/bin/env bash
# Last lease (nvidia-h100-x1): engine and video speed after the decoder change (one recurrence per content on the
# Triton path). Random weights (speed does not depend on them). Carry: the av wheel (the bundled weights are kept
# out of the tree for this call: tracked weights + wheel exceed the 64 MiB limit).
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index .whl/av-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
timeout 230 python3 -m mambast_cli.engine.bench --sizes 256,512,1024 --protocol 20x40 --large 2160x3840 --curve none --json > $OUT/ebench2.json 2> $OUT/ebench2.err
python3 -c "import json; from mambast_cli.engine.bench import format_report; print(format_report(json.load(open('$OUT/ebench2.json'))))" 2>&1 | tail -25
timeout 260 python3 scripts/bench_video.py --frames 120 --presets veryfast superfast --smooth 0 4 --json-out $OUT/bench_video2.json 2>&1 | tail -14

#!/usr/bin/env bash
# Prepared in session 3, NOT yet run (nvidia-h100-x1, two calls of ~4 min; weights out of the tree, carry the av wheel):
#   PART=1: 1080p video end to end with the encode thread vs the encoder process (MAMBAST_VIDEO_ENCODER=process).
#           If the process overlaps with stylisation (wall ≈ max of the stylise and encode busy times instead of
#           their sum), make it the default.
#   PART=2: the image pipeline end to end (512² JPEG folder → JPEGs, one GPU, `mambast bench --folder`) now that
#           pictures travel as uint8 and are converted on the GPU; compare with session 1's 81 img/s (BENCHMARKS.md).
#   PART=3: never measured yet (issue 5): one 7680×4320 image, and the peak-memory-vs-pixels curve.
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index .whl/av-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
if [ "${PART:-1}" = 1 ]; then
  python3 scripts/probe_av_gil.py 2>&1 | tail -6
  for m in thread process; do
    echo "== MAMBAST_VIDEO_ENCODER=$m"
    MAMBAST_VIDEO_ENCODER=$m timeout 200 python3 scripts/bench_video.py --frames 480 --presets superfast ultrafast \
      --smooth 4 --json-out $OUT/bench_video_$m.json 2>&1 | tail -4
  done
elif [ "$PART" = 3 ]; then
  timeout 500 python3 -m mambast_cli.engine.bench --sizes 512 --protocol 0x0 --large 4320x7680 \
    --curve 512,1024,2048,3072,4096,5760 --no-baseline --json > $OUT/engine_8k.json 2> $OUT/engine_8k.err
  python3 -c "import json; from mambast_cli.engine.bench import format_report; print(format_report(json.load(open('$OUT/engine_8k.json'))))" 2>&1 | tail -20
else
  timeout 400 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size 512 --json > $OUT/bench_folder.json
  cat $OUT/bench_folder.json | tail -20
fi

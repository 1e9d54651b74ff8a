#!/usr/bin/env bash
# Session 12, second call (nvidia-h200, random weights; carry the PyAV wheel, bundled weights moved out): the
# stored states scanned in segments (kernels/style_states.py) and the skip term moved into the epilogue.
#   1. scripts/check_style_states.py: parity and times at the real shapes, G from 2 up (where the form pays now),
#      the states kernel at 1 / 4 / 8 / 16 / 32 / 64 segments.
#   2. engine rows (256/512/1024, 4K, 20 x 40 protocol).
#   3. the 1080p video job, 480 frames, stored states auto vs off, alternating.
set -o pipefail
export PYTHONUNBUFFERED=1
ls .whl/av-*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-deps --no-index .whl/av-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
timeout 240 python3 scripts/check_style_states.py --segments 1,4,8,16,32,64 \
  --shapes "64,64,64;64,64,16;64,64,8;64,64,4;64,64,2;32,32,64;128,128,16;135,240,16;135,240,8;135,240,4;135,240,2" \
  --out $OUT/style_states_n.json 2>&1 | grep -v -i warn | tail -12
timeout 150 python3 -m mambast_cli.engine.bench --sizes 256,512,1024 --contents 128 --protocol 20x40 \
  --large 2160x3840 --curve none --no-baseline --json > $OUT/engine_n.json 2>/dev/null
python3 -c "import json; r=json.load(open('$OUT/engine_n.json')); print([(x['size'], x['engine_img_per_s'], x['engine_b1_ms']) for x in r['rows']], r['uhd']['engine_ms'], [x['wall_s'] for x in r['protocol']['engine_runs']])"
for v in "st MAMBAST_STYLE_STATES=auto" "loop MAMBAST_STYLE_STATES=0" "st2 MAMBAST_STYLE_STATES=auto" "loop2 MAMBAST_STYLE_STATES=0"; do
  echo "== 480 ${v%% *}"
  env ${v#* } timeout 150 python3 scripts/bench_video.py --frames 480 --smooth 4 --workdir /tmp/bvn480 --job-only \
    --presets veryfast --json-out $OUT/video_n_480_${v%% *}.json 2>&1 | grep -v -i warn | tail -1
done

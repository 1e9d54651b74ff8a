#!/usr/bin/env bash
# Prepared in session 11 for the next lease (random weights unless said; bundled weights may stay in the tree for
# PART=3/4, move them out when carrying the PyAV wheel). On an x4 kind: training on GPUs 0-2 as in lease_k.sh's
# header, these parts on GPU 3 (BENCH_GPU=3 PART=k taskset -c 32-47 bash scripts/device/lease_l.sh).
#   PART=1: the 1080p video job (issue 6), 480 and 1440 frames, default (stored style states for the decoder's
#           16-frame batches, session 11) then MAMBAST_STYLE_STATES=0, alternating: the states form is measured on
#           the scan alone only (1.75x at 1080p G16, H200). On an H100 this is the row issue 6 is judged on.
#   PART=2: engine rows (256/512/1024, 4K, 20 x 40 protocol) with states auto / 0, and the issue-3 scan row.
#   PART=3: scripts/check_style_states.py (parity + timing at the real shapes, then G 8 and 12 for the threshold)
#           and check_precision.py with the states forced on (MAMBAST_STYLE_STATES=1), bundled weights.
#   PART=4: the folder on a fresh machine (3000 pictures), then scripts/profile_engine.py.
set -o pipefail
[ -n "$BENCH_GPU" ] && export CUDA_VISIBLE_DEVICES=$BENCH_GPU
export PYTHONUNBUFFERED=1
ls .whl/av-*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-deps --no-index .whl/av-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
if [ "${PART:-1}" = 1 ]; then
  for n in 480 1440; do
    for v in "st MAMBAST_STYLE_STATES=auto" "loop MAMBAST_STYLE_STATES=0" "st2 MAMBAST_STYLE_STATES=auto" "loop2 MAMBAST_STYLE_STATES=0"; do
      echo "== $n ${v%% *}"
      env ${v#* } timeout 120 python3 scripts/bench_video.py --frames $n --smooth 4 --workdir /tmp/bvl$n --job-only \
        --presets veryfast --json-out $OUT/video_l_${n}_${v%% *}.json 2>&1 | grep -v -i warn | tail -1
    done
  done
elif [ "$PART" = 2 ]; then
  for v in "st MAMBAST_STYLE_STATES=auto" "loop MAMBAST_STYLE_STATES=0"; do
    env ${v#* } timeout 120 python3 -m mambast_cli.engine.bench --sizes 256,512,1024 --contents 128 --protocol 20x40 \
      --large 2160x3840 --curve none --no-baseline --json > $OUT/engine_l_${v%% *}.json 2>/dev/null
    python3 -c "import json; r=json.load(open('$OUT/engine_l_${v%% *}.json')); print('${v%% *}', [(x['size'], x['engine_img_per_s'], x['engine_b1_ms']) for x in r['rows']], r['uhd']['engine_ms'], [x['wall_s'] for x in r['protocol']['engine_runs']])"
  done
  timeout 120 python3 kernels/bench.py --only "^v3 enc512 B8 (v2|fwd)" --out $OUT/issue3_l.json 2>&1 | grep -v -i warn | sed -n '/^row /,$p'
elif [ "$PART" = 3 ]; then
  timeout 150 python3 scripts/check_style_states.py --out $OUT/style_states_l.json 2>&1 | grep -v -i warn | tail -8
  # where the stored states start to pay (the default threshold, STATES_MIN_G = 16, was set between G4 and G16)
  timeout 120 python3 scripts/check_style_states.py --shapes "64,64,8;64,64,12;135,240,8;135,240,12" \
    --out $OUT/style_states_threshold_l.json 2>&1 | grep -v -i warn | tail -4
  MAMBAST_STYLE_STATES=1 timeout 90 python3 scripts/check_precision.py --size 512 --out $OUT/precision_l.json 2>&1 | tail -2
elif [ "$PART" = 4 ]; then
  timeout 150 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size 512 --json > $OUT/folder_l.json 2>/dev/null
  python3 -c "import json; r=json.load(open('$OUT/folder_l.json'))['folder']; print({k: r.get(k) for k in ('wall_img_s', 'steady_img_s', 'warmup_s', 'batch_sizes')})"
  timeout 240 python3 scripts/profile_engine.py --random --sizes 512x512,1080x1920 --max-batch 64 --out $OUT/profile_l 2>&1 \
    | grep -v -i warn | tail -40
fi
cp ~/.cache/mambast/cross_scan_tune.json $OUT/tune_l_part${PART:-1}.json 2>/dev/null

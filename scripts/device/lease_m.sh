#!/usr/bin/env bash
# Session 12, nvidia-h200-x2 (no H100 kind lent): GPU 0 trains (train_runs.sh, CPUS=0-15), GPU 1 measures beside it
# pinned to the other 16 cores (BENCH_GPU=1 PART=k taskset -c 16-31 bash scripts/device/lease_m.sh).
#   PART=P: where the GPU time goes now that the decoder reads stored style states (scripts/profile_engine.py,
#           512² batch 64 and 1080p), then where the stored states start to pay (check_style_states G 8 / 12).
#   PART=V: the 1080p video job (issue 6), 480 and 1440 frames, stored states auto vs off, alternating
#           (needs the PyAV wheel in .whl: carry it, with the bundled weights moved out of the tree).
set -o pipefail
[ -n "$BENCH_GPU" ] && export CUDA_VISIBLE_DEVICES=$BENCH_GPU
export PYTHONUNBUFFERED=1
ls .whl/av-*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-deps --no-index .whl/av-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
if [ "$PART" = P ]; then
  timeout 240 python3 scripts/profile_engine.py --random --sizes 512x512,1080x1920 --max-batch 64 --out $OUT/profile_m 2>&1 \
    | grep -v -i warn | tail -40
  timeout 120 python3 scripts/check_style_states.py --shapes "64,64,8;64,64,12;64,64,16;135,240,8;135,240,12" \
    --out $OUT/style_states_threshold_m.json 2>&1 | grep -v -i warn | tail -6
elif [ "$PART" = V ]; then
  for n in 480 1440; do
    for v in "st MAMBAST_STYLE_STATES=auto" "loop MAMBAST_STYLE_STATES=0" "st2 MAMBAST_STYLE_STATES=auto" "loop2 MAMBAST_STYLE_STATES=0"; do
      echo "== $n ${v%% *}"
      env ${v#* } timeout 120 python3 scripts/bench_video.py --frames $n --smooth 4 --workdir /tmp/bvm$n --job-only \
        --presets veryfast --json-out $OUT/video_m_${n}_${v%% *}.json 2>&1 | grep -v -i warn | tail -1
    done
  done
fi
cp ~/.cache/mambast/cross_scan_tune.json $OUT/tune_m_part${PART}.json 2>/dev/null

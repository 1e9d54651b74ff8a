#!/usr/bin/env bash
# Prepared in session 7 for an x4 machine; session 8 got only x1/x2 kinds, so: nvidia-h100-x2, one fine-tune on GPU 0
# (CPUS=0-15) while these parts run on GPU 1 pinned to the other 16 cores:
#   BENCH_GPU=1 PART=4 taskset -c 16-31 bash scripts/device/next_lease8.sh
# Bundled weights moved out of the tree; carry the PyAV wheel (and torchvision is on the image).
#   PART=1: the 1080p video job with the GPU timeline (session 7: gpu_busy_s / gpu_idle_s / first_launch_s / tail_s)
#           to see what the ~4.8 s the GPU is not stylizing are; default and MAMBAST_VIDEO_GPU_YUV=0 for contrast.
#   PART=2: where nvJPEG's ~5 s of start-up goes (scripts/probe_gpu_jpeg_startup.py), then the folder with and
#           without it (the answer decides whether GPU decoding can become the default).
#   PART=4: the scan forward's (N, BD) state tile (TN = 1, session 7: no shuffles, barriers or shared memory in
#           its loop, sm_90a SASS): parity on the GPU, then its rows against the best (BD, N) configs. Run it FIRST on
#           a fresh machine: every later part tunes with the TN candidates in the list.
#   PART=3: where the engine's GPU time goes now (the last profile is session 4's, before the fused block kernels
#           and PF = 4): both folder-bound and video-bound targets now wait on the engine (BENCHMARKS.md, session 7).
# Training on GPUs 0-2 (issue 4), from the session-7 bundled model: the averaged pair again, longer (the floor and
# both losses fell with training time in session 7, not with the identity weight):
#   TL=22 EMA=0.999 RUNS="h_a:20:70 h_b:35:70 h_c:27:70" bash scripts/device/train_runs.sh
# (EMA: the validation lines then carry the raw weights' losses too, so one lease says whether averaging pays.)
set -o pipefail
[ -n "$BENCH_GPU" ] && export CUDA_VISIBLE_DEVICES=$BENCH_GPU
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index .whl/av-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
if [ "${PART:-1}" = 1 ]; then
  V="python3 scripts/bench_video.py --frames 480 --presets superfast --smooth 4 --workdir /tmp/bv8"
  timeout 200 $V --json-out $OUT/video8.json 2>&1 | grep -v -i warn | tail -4
  timeout 120 $V --job-only --json-out $OUT/video8_again.json 2>&1 | grep -v -i warn | tail -1
  MAMBAST_VIDEO_GPU_YUV=0 timeout 120 $V --job-only --json-out $OUT/video8_rgb.json 2>&1 | grep -v -i warn | tail -1
elif [ "$PART" = 2 ]; then
  timeout 60 python3 scripts/probe_gpu_jpeg_startup.py --size 512
  for m in 0 1 0 1; do
    MAMBAST_GPU_DECODE=$m timeout 120 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size 512 \
      --json > $OUT/folder8_$m.json 2>/dev/null
    python3 -c "import json; r=json.load(open('$OUT/folder8_$m.json'))['folder']; print('gpu_decode=$m', {k: r[k] for k in ('wall_img_s', 'steady_img_s', 'warmup_s')})"
  done
elif [ "$PART" = 4 ]; then
  timeout 200 python3 -m pytest -q -x tests/kernels/test_cross_scan.py -k "transposed or prefetch_depth" 2>&1 | tail -2
  timeout 100 python3 kernels/check_gpu.py --quick 2>&1 | tail -3
  timeout 250 python3 kernels/bench.py --only "v2 tn" 2>&1 | grep -v -i warn | tail -30
elif [ "$PART" = 5 ]; then
  # the engine rows with the TN candidates excluded (session 6/7 engine) and included (default now), same machine
  for tn in 0 1; do
    echo "== MAMBAST_SCAN2_TN=$tn"
    MAMBAST_SCAN2_TN=$tn timeout 280 python3 -m mambast_cli.engine.bench --sizes 256,512,1024 --contents 128 --protocol 20x40 \
      --large 2160x3840 --curve none --no-baseline 2>&1 | grep -v -i warn | tail -14
  done
elif [ "$PART" = 3 ]; then
  timeout 300 python3 scripts/profile_engine.py --random --sizes 512x512,1080x1920 --max-batch 64 --out $OUT/profile8 2>&1 \
    | grep -v -i warn | tail -40
fi
# the scan tuner's picks so far, for kernels/tuned/h100.json (scripts/bundle_tune_picks.py; session 7 removed the old one)
cp ~/.cache/mambast/cross_scan_tune.json $OUT/tune8_part${PART:-1}.json 2>/dev/null

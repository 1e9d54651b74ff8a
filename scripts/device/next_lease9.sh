#!/usr/bin/env bash
# Prepared in session 8 for the next lease. Training (issue 4) as in sessions 7-8: on an x2/x4 kind, fine-tunes on
# the other GPUs (scripts/device/train_runs.sh with CPUS set away from the benchmark's cores), e.g. from the
# session-8 bundled model:
#   TL=22 CPUS=0-15 EMA=0.999 RUNS="i_a:27:70" bash scripts/device/train_runs.sh
# and these parts on a GPU of their own (BENCH_GPU=N PART=k taskset -c <16 other cores> bash …next_lease9.sh).
# Bundled weights moved out of the tree; carry the PyAV wheel.
#   PART=1: where the scan forward's per-step time goes (issue 3; session 8: the shuffle-free TN = 1 layout was
#           slower, so the shuffles were not the bound). Nsight Compute on one call at the engine's 512² batch-64
#           shape (ncu works on the Firecracker H100 machines, KINDS.md; --clock-control none, METHOD.md), the
#           report's details and source-level stall reasons as text.
#   PART=2: the 1080p video job now that the GPU is its bound (session 8: 54.5 fps, GPU busy 90 %): the default
#           preset (veryfast) against superfast, and batches of 32 frames against 16 (the scan is latency-bound at
#           1080p; session 2-3: batch 8 → 16 halved its per-frame cost).
#   PART=3: the 512² folder with GPU decoding (the default since session 8) in one and two worker processes, and
#           with CPU decoding (MAMBAST_GPU_DECODE=0) for its stages: on session 8's second host the calling thread's
#           `stack` stage (pinned staging, incl. waiting for the buffer's last upload) took 13.5 of 14.5 s.
#   PART=4: the engine profile again, now with each kernel's launching op (`scripts/profile_engine.py` by_op): what
#           the 26 generic elementwise calls per batch (0.072 ms per 512² picture, session 8) are.
#   PART=5: bf16 direction slots (MAMBAST_SCAN_SLOTS=bf16, session 8, opt-in): engine rows and the bf16-vs-fp32
#           PSNR (extras) against the fp32 slots; the fused epilogue read 4 fp32 slots per token (~1.7 ms per call at
#           512² batch 64, memory-bound), predicted ~3 % of the engine.
set -o pipefail
[ -n "$BENCH_GPU" ] && export CUDA_VISIBLE_DEVICES=$BENCH_GPU
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index .whl/av-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
if [ "${PART:-1}" = 1 ]; then
  timeout 60 python3 scripts/ncu_scan.py --batch 64 --calls 3
  timeout 400 ncu --clock-control none --section WarpStateStats --section SchedulerStats --section Occupancy \
    --section LaunchStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
    --section InstructionStats --section SourceCounters -k regex:_seq_fwd_kernel --launch-skip 2 --launch-count 1 \
    -o $OUT/scan_b64 python3 scripts/ncu_scan.py --batch 64 --calls 3 2>&1 | tail -5
  ncu --import $OUT/scan_b64.ncu-rep --page details > $OUT/scan_b64_details.txt 2>&1
  ncu --import $OUT/scan_b64.ncu-rep --page source --csv --print-source sass > $OUT/scan_b64_sass.csv 2>&1
  grep -i -E "stall|warp cycles|issued|eligible|occupancy|registers" $OUT/scan_b64_details.txt | head -60
elif [ "$PART" = 2 ]; then
  V="python3 scripts/bench_video.py --frames 480 --smooth 4 --workdir /tmp/bv10 --job-only"
  timeout 200 $V --presets veryfast superfast --json-out $OUT/video10_presets.json 2>&1 | grep -v -i warn | tail -4
  timeout 120 $V --presets superfast --batch 32 --json-out $OUT/video10_b32.json 2>&1 | grep -v -i warn | tail -2
elif [ "$PART" = 3 ]; then
  timeout 120 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size 512 --json > $OUT/folder10.json 2>/dev/null
  python3 -c "import json; r=json.load(open('$OUT/folder10.json'))['folder']; print({k: r.get(k) for k in ('wall_img_s', 'steady_img_s', 'warmup_s')})"
  MAMBAST_GPU_DECODE=0 timeout 120 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size 512 \
    --json > $OUT/folder10_cpu.json 2>/dev/null
  python3 -c "import json; r=json.load(open('$OUT/folder10_cpu.json'))['folder']; print({k: r.get(k) for k in ('wall_img_s', 'steady_img_s', 'warmup_s', 'stages_s')})"
  timeout 200 python3 scripts/bench_multi.py --gpus 1 --workers-per-gpu 1,2 --images 3000 2>&1 | grep -v -i warn | tail -6
elif [ "$PART" = 5 ]; then
  for sl in fp32 bf16; do
    echo "== MAMBAST_SCAN_SLOTS=$sl"
    MAMBAST_SCAN_SLOTS=$sl timeout 150 python3 -m mambast_cli.engine.bench --sizes 256,512,1024 --contents 128 \
      --protocol 0x0 --large 2160x3840 --curve none --no-baseline --json > $OUT/engine10_$sl.json 2>/dev/null
    python3 -c "import json; r=json.load(open('$OUT/engine10_$sl.json')); print(json.dumps(r['rows']), json.dumps(r['uhd']), json.dumps(r['extras']))"
  done
elif [ "$PART" = 4 ]; then
  timeout 300 python3 scripts/profile_engine.py --random --sizes 512x512,1080x1920 --max-batch 64 --out $OUT/profile10 2>&1 \
    | grep -v -i warn | tail -50
fi
cp ~/.cache/mambast/cross_scan_tune.json $OUT/tune9_part${PART:-1}.json 2>/dev/null

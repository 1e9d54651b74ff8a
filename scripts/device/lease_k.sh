#!/usr/bin/env bash
# Prepared in session 10 for the next lease. Training (issue 4) on GPUs 0-2 of an x4 kind as in sessions 7-10:
#   TL=.. CPUS=0-31 EMA=0.999 RUNS="k_a:27:70 k_b:32:70 k_c:24:70" bash scripts/device/train_runs.sh
# and these parts on GPU 3, pinned to 16 cores as the x1 kind has (BENCH_GPU=3 PART=k taskset -c 32-47 bash
# scripts/device/lease_k.sh), or alone on an x1. Bundled weights moved out of the tree (random weights: speed only);
# carry the PyAV wheel in the first call that needs it (pip keeps it installed on the machine).
#   PART=1: the 512² folder on a fresh machine, first (session 10 on an H200: 148 img/s wall against 526 steady, the
#           partial last batch timed by the tuner mid-job; since then picks for the H200 are bundled and a batch
#           within 2x of a timed one borrows its pick), then copy streams on / off (scripts/check_copy_streams.py:
#           same bytes?, both rates), then with CPU decoding.
#   PART=2: the 1080p video job, 480 and 1440 frames, veryfast (default) and superfast (session 10 on the H100:
#           59.1 / 61.3 fps; the pinned buffers are now allocated while the first frames decode), then 1440 frames
#           with MAMBAST_COPY_STREAMS=1 and with MAMBAST_SCAN_SLOTS=bf16 (each scan writes its 4 direction slots in
#           bf16: at 1080p ~0.5 GB a call and frame in fp32, written by the scan and read back by the epilogue).
#   PART=3: engine rows (256/512/1024, 4K) with v3 (default), with bf16 direction slots (MAMBAST_SCAN_SLOTS=bf16,
#           opt-in since session 8 and never measured; the bench's bf16-vs-fp32 PSNR row says what it costs) and
#           without v3 (MAMBAST_SCAN3=0): not yet measured on an H100 with v3 (session 10's rows are an H200's).
#   PART=4: the engine profile (`scripts/profile_engine.py`).
#   PART=5: v3 with two / four lanes per channel (`kernels/bench.py --only "^v3 .* (lanes|fwd \(64, 2, 0, 0, 4, 2\))"`:
#           BD 16 / 8 on one warp, 128 / 96 registers; kernels/SCAN_NOTES.md, session 10), then Nsight Compute on
#           (16, 1) at the 512² batch-8 shape; parity first (`kernels/check_gpu.py --v3` has rows for both).
#   PART=6: the A/B of scripts/device/patches/ (v3 tail reload, then refill after the step): kernel rows (incl. the
#           lanes rows of PART=5) and v3 parity before, after the first diff, after both; the tree's copy of the
#           kernel is restored at the end. With both diffs the SASS says: (64, 2) 130 instructions a step, 255
#           registers; (16, 1) 98 a step at 159 registers, or 103 capped at 128 without a spill (16 warps an SM).
# Priority when device time is short (session 10's note): 6, 5, 2, 1, 3, 4. Every part copies the tune cache to $OUT
# (re-bundle kernels/tuned/<gpu>.json from it).
set -o pipefail
[ -n "$BENCH_GPU" ] && export CUDA_VISIBLE_DEVICES=$BENCH_GPU
export PYTHONUNBUFFERED=1
ls .whl/av-*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-deps --no-index .whl/av-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
fields="('wall_img_s', 'steady_img_s', 'warmup_s', 'batch_sizes', 'stages_s')"
if [ "${PART:-1}" = 1 ]; then
  timeout 150 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size 512 --json > $OUT/folder_k.json 2>/dev/null
  python3 -c "import json; r=json.load(open('$OUT/folder_k.json'))['folder']; print({k: r.get(k) for k in $fields})"
  timeout 200 python3 scripts/check_copy_streams.py --images 2000 --out $OUT/copy_streams.json 2>&1 | grep -v -i warn | tail -3
  MAMBAST_GPU_DECODE=0 timeout 150 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size 512 \
    --json > $OUT/folder_k_cpu.json 2>/dev/null
  python3 -c "import json; r=json.load(open('$OUT/folder_k_cpu.json'))['folder']; print({k: r.get(k) for k in $fields})"
elif [ "$PART" = 2 ]; then
  for n in 480 1440; do
    timeout 280 python3 scripts/bench_video.py --frames $n --smooth 4 --workdir /tmp/bvk$n --job-only \
      --presets veryfast superfast --json-out $OUT/video_k_$n.json 2>&1 | grep -v -i warn | tail -3
  done
  for v in "cs MAMBAST_COPY_STREAMS=1" "bf16 MAMBAST_SCAN_SLOTS=bf16"; do
    env ${v#* } timeout 120 python3 scripts/bench_video.py --frames 1440 --smooth 4 --workdir /tmp/bvk1440 \
      --job-only --presets veryfast --json-out $OUT/video_k_${v%% *}.json 2>&1 | grep -v -i warn | tail -1
  done
elif [ "$PART" = 3 ]; then
  IFS=, read -r -a variants <<< "${VARIANTS:-v3 MAMBAST_SCAN3=1,v3bf16 MAMBAST_SCAN_SLOTS=bf16,v2 MAMBAST_SCAN3=0}"
  for v in "${variants[@]}"; do
    tag=${v%% *}; echo "== $tag"
    env ${v#* } timeout 250 python3 -m mambast_cli.engine.bench --sizes 256,512,1024 --contents 128 \
      --protocol 20x40 --large 2160x3840 --curve none --no-baseline --json > $OUT/engine_k_$tag.json 2>/dev/null
    python3 -c "import json; r=json.load(open('$OUT/engine_k_$tag.json')); print(json.dumps(r['rows']), json.dumps(r['uhd']), json.dumps(r.get('protocol')))"
  done
elif [ "$PART" = 4 ]; then
  timeout 300 python3 scripts/profile_engine.py --random --sizes 512x512,1080x1920 --max-batch 64 --out $OUT/profile_k 2>&1 \
    | grep -v -i warn | tail -50
elif [ "$PART" = 5 ]; then
  timeout 120 python3 kernels/check_gpu.py --v3 --out $OUT/check_lanes.json 2>&1 | tail -12
  timeout 240 python3 kernels/bench.py --only '^v3 .* (lanes|fwd \(64, 2, 0, 0, 4, 2\)|fwd \(32, 1, 1, 0, 4, 2, 200\))' \
    --out $OUT/lanes.json 2>&1 | grep -v -i warn | sed -n '/^row /,$p'
  timeout 150 ncu --clock-control none --section WarpStateStats --section SchedulerStats --section Occupancy \
    --section LaunchStats --section InstructionStats -k "regex:_fwd3_kernel" --launch-skip 2 --launch-count 1 \
    --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" -o $OUT/ncu_lanes \
    python3 scripts/ncu_scan.py --batch 8 --calls 3 --config 16,1,0,0,4,2 2>&1 | tail -2
  ncu --import $OUT/ncu_lanes.ncu-rep --page details > $OUT/ncu_lanes_details.txt 2>&1; rm -f $OUT/*.ncu-rep
  grep -i -E "duration|warp cycles per|issued ipc|eligible|achieved occupancy|registers per" $OUT/ncu_lanes_details.txt | head
elif [ "$PART" = 6 ]; then
  R='^v3 (enc512 B8|enc512 B64|1080p B8|dec512 G8) (fwd \((64, 2, 0, 0, 4, 2|32, 1, 1, 0, 4, 2, 200)\)|lanes)'
  cp kernels/cross_scan_v3.py /tmp/v3_orig.py
  for step in base v3_tail_reload v3_refill_after; do
    [ $step = base ] || python3 scripts/device/apply_diff.py scripts/device/patches/$step.diff
    echo "== $step"
    [ $step = base ] || timeout 75 python3 kernels/check_gpu.py --v3 --out $OUT/check_$step.json 2>&1 | tail -12
    timeout 150 python3 kernels/bench.py --only "$R" --out $OUT/ab_$step.json 2>&1 | grep -v -i warn | sed -n '/^row /,$p'
  done
  cp /tmp/v3_orig.py kernels/cross_scan_v3.py
fi
cp ~/.cache/mambast/cross_scan_tune.json $OUT/tune_k_part${PART:-1}.json 2>/dev/null

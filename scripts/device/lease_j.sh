#!/usr/bin/env bash
# Session 10 (lease_i.sh as session 9 left it, with the "v3 emu" rows in PART=1-2; the engine run with the FMA-pipe
# exponentials offered to the tuner was dropped after PART=1 showed them slower at every shape). Training (issue 4)
# on GPUs 0-2 of an x4 kind as in sessions 7-9:
#   TL=.. CPUS=0-31 EMA=0.999 RUNS="j_a:27:70 j_b:32:70 j_c:24:70" bash scripts/device/train_runs.sh
# and these parts on GPU 3 (BENCH_GPU=3 PART=k taskset -c 32-47 bash scripts/device/lease_j.sh): 16 cores, as the
# x1 kind has. Bundled weights moved out of the tree (random weights: speed only); carry the PyAV wheel.
#   PART=1: v3 parity (kernels/check_gpu.py --quick, incl. the FMA-exponential row) and `kernels/bench.py --only "^v3 "`
#           (v3 configs, their "emu" variants and v2's picks, per shape).
#   PART=2: Nsight Compute on the fixed v3 (B64, B8), v2 (B64) and v3 emu (B64): warp states, pipe utilisation,
#           stall reasons (--clock-control none, METHOD.md).
#   PART=3: engine rows (256/512/1024, 4K): v3 a tuner candidate (default) and without it (MAMBAST_SCAN3=0);
#           VARIANTS="tag ENV=..,tag ENV=.." replaces the list.
#   PART=4: the 1080p video job: veryfast (default) against superfast, and batches of 32 frames.
#   PART=5: the 512² folder (GPU decoding, CPU decoding), and one and two worker processes.
#   PART=6: the engine profile (`scripts/profile_engine.py`, device events only since session 9).
# Every part copies the tune cache to $OUT (re-bundle kernels/tuned/h100.json from it).
set -o pipefail
[ -n "$BENCH_GPU" ] && export CUDA_VISIBLE_DEVICES=$BENCH_GPU
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index .whl/av-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
if [ "${PART:-1}" = 1 ]; then
  timeout 150 python3 kernels/check_gpu.py --quick --out $OUT/check_v3.json 2>&1 | grep -v -i warn | tail -22
  timeout 420 python3 kernels/bench.py --only "^v3 " --out $OUT/v3bench.json 2>&1 | grep -v -i warn | sed -n '/^row /,$p'
elif [ "$PART" = 2 ]; then
  for spec in "v3:64,2,0,0,4,2:64" "v2:64,2,0,0,4:64" "v3b8:64,2,0,0,4,2:8" "v3emu:64,2,0,0,4,2,0,1:64"; do
    IFS=: read -r tag cfg batch <<< "$spec"
    timeout 200 ncu --clock-control none --section WarpStateStats --section SchedulerStats --section Occupancy \
      --section LaunchStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
      --section InstructionStats --section SourceCounters -k "regex:_fwd3_kernel|_seq_fwd_kernel" --launch-skip 2 \
      --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio|sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active" \
      --launch-count 1 -o $OUT/ncu_$tag python3 scripts/ncu_scan.py --batch $batch --calls 3 --config $cfg 2>&1 | tail -3
    ncu --import $OUT/ncu_$tag.ncu-rep --page details > $OUT/ncu_${tag}_details.txt 2>&1
    ncu --import $OUT/ncu_$tag.ncu-rep --page source --csv --print-source sass > $OUT/ncu_${tag}_sass.csv 2>&1
    echo "== $tag $cfg"; grep -i -E "duration|warp cycles per|issued ipc|eligible|achieved occupancy|registers per" \
      $OUT/ncu_${tag}_details.txt | head -12
    grep -E "issue_stalled|inst_executed_pipe" $OUT/ncu_${tag}_details.txt | awk '$NF+0 > 0.05' | sort -k3 -g -r | head -14
  done
  rm -f $OUT/*.ncu-rep
elif [ "$PART" = 3 ]; then
  IFS=, read -r -a variants <<< "${VARIANTS:-v3 MAMBAST_SCAN3=1,v2 MAMBAST_SCAN3=0}"
  for v in "${variants[@]}"; do
    tag=${v%% *}; echo "== $tag"
    env ${v#* } timeout 200 python3 -m mambast_cli.engine.bench --sizes 256,512,1024 --contents 128 \
      --protocol 0x0 --large 2160x3840 --curve none --no-baseline --json > $OUT/engine_$tag.json 2>/dev/null
    python3 -c "import json; r=json.load(open('$OUT/engine_$tag.json')); print(json.dumps(r['rows']), json.dumps(r['uhd']), json.dumps(r['extras']))"
  done
elif [ "$PART" = 4 ]; then
  V="python3 scripts/bench_video.py --frames 480 --smooth 4 --workdir /tmp/bvj --job-only"
  timeout 200 $V --presets veryfast superfast --json-out $OUT/video_j_presets.json 2>&1 | grep -v -i warn | tail -4
  timeout 120 $V --presets superfast --batch 32 --json-out $OUT/video_j_b32.json 2>&1 | grep -v -i warn | tail -2
elif [ "$PART" = 5 ]; then
  timeout 120 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size 512 --json > $OUT/folder_j.json 2>/dev/null
  python3 -c "import json; r=json.load(open('$OUT/folder_j.json'))['folder']; print({k: r.get(k) for k in ('wall_img_s', 'steady_img_s', 'warmup_s')})"
  MAMBAST_GPU_DECODE=0 timeout 120 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size 512 \
    --json > $OUT/folder_j_cpu.json 2>/dev/null
  python3 -c "import json; r=json.load(open('$OUT/folder_j_cpu.json'))['folder']; print({k: r.get(k) for k in ('wall_img_s', 'steady_img_s', 'warmup_s', 'stages_s')})"
  timeout 200 python3 scripts/bench_multi.py --gpus 1 --workers-per-gpu 1,2 --images 3000 2>&1 | grep -v -i warn | tail -6
elif [ "$PART" = 6 ]; then
  timeout 300 python3 scripts/profile_engine.py --random --sizes 512x512,1080x1920 --max-batch 64 --out $OUT/profile_j 2>&1 \
    | grep -v -i warn | tail -50
fi
cp ~/.cache/mambast/cross_scan_tune.json $OUT/tune_j_part${PART:-1}.json 2>/dev/null

#!/usr/bin/env bash
# Session 5's changes, prepared without a GPU (the session had no device time): run first next session on
# nvidia-h100-x1, bundled weights moved out of the tree (random weights: speed, memory, parity), carry the PyAV wheel
# `.whl/av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl`.
#   PART=1: correctness on the GPU: GPU tests, tests/kernels on CUDA (PF = 4 scan, backward PF = 1, fused block
#           kernels), kernels/check_gpu.py --quick (real sizes, tuned configs), CUDA graphs bit-identical to eager at
#           512² and 1080p (the video limit).
#   PART=2: kernel rows: fused kernels vs PyTorch ops; scan forward PF = 4 vs 1 (encoder, one content, training,
#           1080p); the backward's configs with and without PF = 1 at the training shape.
#   PART=3: the engine as in session 4 (MAMBAST_FUSED_BLOCK=0 MAMBAST_SCAN2_PF=0), + fused block kernels, + the scan
#           forward's loads 4 steps ahead (the default). FS="0 1" then FS=2 if one call cannot hold all three.
#   PART=4: the video job after its pipeline change (pinned pair, no GPU wait on the main thread, CUDA graphs up to
#           1080p-class frames, YUV 4:2:0 made on the GPU): as is, MAMBAST_VIDEO_GPU_YUV=0, MAMBAST_CUDA_GRAPHS=0.
#   PART=5: the host side alone (scripts/bench_host_pipeline.py), the image folder, nvJPEG decoding (check_gpu_jpeg.py,
#           then the folder with MAMBAST_GPU_DECODE=1).
#   PART=6: 2 and 4 worker processes on the GPU (session 4's PART=13: workers stack with numpy).
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index .whl/av-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
report() { python3 -c "import json,sys; from mambast_cli.engine.bench import format_report; print(format_report(json.load(open(sys.argv[1]))))" "$1" 2>&1 | tail -${2:-16}; }
folder() {
  timeout 100 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size $2 --json > $OUT/$1.json 2> $OUT/$1.err
  python3 -c "import json; r=json.load(open('$OUT/$1.json'))['folder']; r.pop('errors'); print(r)"; tail -2 $OUT/$1.err
}
if [ "${PART:-1}" = 1 ]; then
  nvidia-smi -L
  timeout 150 python3 -m pytest -q -m gpu tests/ 2>&1 | tail -3
  timeout 150 python3 -m pytest -q tests/kernels/ 2>&1 | tail -3        # on CUDA: the PF = 4 scan, fused kernels
  timeout 120 python3 kernels/check_gpu.py --quick 2>&1 | tail -4      # real sizes, tuned configs (PF = 4 may win)
  timeout 60 python3 scripts/check_graphs.py --size 512x512 --batch 16 2>&1 | tail -2
  timeout 90 python3 scripts/check_graphs.py --size 1080x1920 --batch 4 2>&1 | tail -2
elif [ "$PART" = 2 ]; then
  timeout 400 python3 kernels/bench.py --only "residual norm|dwconv silu|merge norm gate 512|v2 pf|v2 sweep enc512|v3seq sweep bwd" --out $OUT/bench_rn.json > $OUT/bench_rn.log 2>&1
  grep -A80 "^row " $OUT/bench_rn.log | cut -c1-170
elif [ "$PART" = 3 ]; then
  # 0: session 4's engine (no fused block kernels, no PF = 4 scan); 1: + fused block kernels; 2: + PF = 4 (default)
  for f in ${FS:-0 1 2}; do
    MAMBAST_FUSED_BLOCK=$((f > 0)) MAMBAST_SCAN2_PF=$((f > 1)) timeout 180 python3 -m mambast_cli.engine.bench --sizes 256,512,1024 --protocol 20x40 \
      --large 2160x3840 --curve none --no-baseline --json > $OUT/engine_rn$f.json 2> $OUT/engine_rn$f.err
    echo "== engine $f (0 session 4, 1 + fused block kernels, 2 + scan loads 4 steps ahead)"; report $OUT/engine_rn$f.json 17; tail -2 $OUT/engine_rn$f.err
  done
elif [ "$PART" = 4 ]; then
  # default (graphs + YUV on the GPU), then each of the two off
  for v in default yuv_off graphs_off; do
    echo "== video: $v"
    env $( [ $v = yuv_off ] && echo MAMBAST_VIDEO_GPU_YUV=0 ) $( [ $v = graphs_off ] && echo MAMBAST_CUDA_GRAPHS=0 ) \
      timeout 150 python3 scripts/bench_video.py --frames 480 --presets superfast --smooth 4 \
      --json-out $OUT/video_$v.json 2>&1 | grep -v -i warn | tail -9
  done
elif [ "$PART" = 5 ]; then
  # the host side alone (a null GPU: what 16 cores can decode, stack, encode and write), then the real folder
  timeout 120 python3 scripts/bench_host_pipeline.py --images 3000 2>&1 | tail -1
  folder folder6_512 512
  # JPEGs decoded on the GPU by nvJPEG (torchvision is on the image): parity/speed check, then the folder with it
  timeout 90 python3 scripts/check_gpu_jpeg.py 2>&1 | tail -14
  export MAMBAST_GPU_DECODE=1; folder folder6_512_nvjpeg 512; unset MAMBAST_GPU_DECODE
elif [ "$PART" = 6 ]; then
  timeout 250 python3 scripts/bench_multi.py --gpus 1 --workers-per-gpu 2,4 --images 3000 --json-out $OUT/multi6.json 2>&1 | grep -v -i warn | tail -6
fi

#!/usr/bin/env bash
# Session 8, second (short) lease, nvidia-h100-x1, 16 cores, idle: what this session changed, each with its baseline.
# Bundled weights moved out of the tree (random weights: speed only); carry the PyAV wheel.
#   1. the 1080p video job with copied audio packets in their own slots (video/run.py `_OUT_PACKETS`) against the
#      old single 4-item queue (OLD_RUN=path of the previous video/run.py, swapped in for the second run; session 8 ran
#      `git show ea1a851:mambast_cli/video/run.py > old_video_run.py; OLD_RUN=old_video_run.py bash …`)
#   2. nvJPEG loaded without importing torchvision (io/gpu_jpeg.py `_load_image_ops`): start-up steps, then the
#      512² folder with and without GPU decoding
#   3. the CNN decoder's biases added by the fused pad passes (engine/cnn_nhwc.py `fold_bias`): the pad tests on
#      CUDA (same bits as PyTorch's separate bias pass), then the engine rows at 128 contents per size (the 256²
#      and 1024² targets are throughput targets) with MAMBAST_FOLD_BIAS=0 and 1
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index .whl/av-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
V="python3 scripts/bench_video.py --frames 480 --presets superfast --smooth 4 --workdir /tmp/bv9 --job-only"
echo "== video, packets in their own slots"
timeout 150 $V --json-out $OUT/video9_new.json 2>&1 | grep -v -i warn | tail -1
if [ -n "$OLD_RUN" ]; then
  cp mambast_cli/video/run.py /tmp/run_new.py && cp "$OLD_RUN" mambast_cli/video/run.py
  echo "== video, the old single queue"
  timeout 100 $V --json-out $OUT/video9_old.json 2>&1 | grep -v -i warn | tail -1
  cp /tmp/run_new.py mambast_cli/video/run.py
  timeout 100 $V --json-out $OUT/video9_new2.json 2>&1 | grep -v -i warn | tail -1
fi
echo "== nvJPEG start-up"
timeout 60 python3 scripts/probe_gpu_jpeg_startup.py --size 512 2>&1 | grep -v -i warn
for m in 1 0; do
  MAMBAST_GPU_DECODE=$m timeout 90 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size 512 \
    --json > $OUT/folder9_$m.json 2>/dev/null
  python3 -c "import json; r=json.load(open('$OUT/folder9_$m.json'))['folder']; print('gpu_decode=$m', {k: r.get(k) for k in ('wall_img_s', 'steady_img_s', 'warmup_s', 'gpu_decoded')})"
done
echo "== pad kernel tests on CUDA"
timeout 60 python3 -m pytest -q tests/kernels/test_pad_nhwc.py 2>&1 | tail -1
for fold in 0 1; do
  echo "== engine rows, 128 contents per size, MAMBAST_FOLD_BIAS=$fold"
  MAMBAST_FOLD_BIAS=$fold timeout 110 python3 -m mambast_cli.engine.bench --sizes 256,512,1024 --contents 128 \
    --protocol 0x0 --large 0x0 --curve none --no-baseline --json > $OUT/engine9_fold$fold.json 2>/dev/null
  python3 -c "import json; r=json.load(open('$OUT/engine9_fold$fold.json')); print(json.dumps(r['rows']), json.dumps(r['extras']))"
done
cp ~/.cache/mambast/cross_scan_tune.json $OUT/tune9.json 2>/dev/null

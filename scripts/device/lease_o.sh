#!/usr/bin/env bash
# Prepared in session 12 for the next lease. Random weights unless said; carry the PyAV wheel for PART=H (move the
# bundled weights out of the tree for that call: the two do not fit in one call's 64 MiB).
#   PART=H (an H100, nvidia-h100-x1, the machine issues 3, 5 and 6 are judged on; none was lent in sessions 11-12):
#     1. the 1080p video job (issue 6): 480 frames twice, then 1440 frames (each clip is made once, in --workdir);
#        session 10 measured 61.3 / 59.1 fps there before the stored states (H200 now: 77-78 on 480 frames);
#     2. the issue-3 row (encoder scan, 512² B8: 1.509 ms in session 10, target 1.1);
#     3. engine rows (256/512/1024, 4K, 20 x 40 protocol).
#   PART=F: the 512² folder (3000 pictures, GPU decoding), bundled weights (they may stay in the tree: no wheel).
#   PART=T: training throughput at batch 8 / 16 / 32 per GPU (needs the EfficientNet wheel installed, as in the
#           training calls): the step is latency-bound at batch 8 (the scan backward 46 % of it, session 2), so a
#           larger batch may buy more pictures a device-minute for the long run issue 4 needs.
set -o pipefail
export PYTHONUNBUFFERED=1
ls .whl/av-*.whl >/dev/null 2>&1 && python3 -m pip install -q --no-deps --no-index .whl/av-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ "${PART:-H}" = H ]; then
  for n in 480 480 1440; do
    echo "== video $n"
    timeout 240 python3 scripts/bench_video.py --frames $n --smooth 4 --workdir /tmp/bvo$n --job-only \
      --presets veryfast --json-out $OUT/video_o_${n}_$(date +%s).json 2>&1 | grep -v -i warn | tail -1
  done
  timeout 90 python3 kernels/bench.py --only "^v3 enc512 B8 (v2|fwd)" --out $OUT/issue3_o.json 2>&1 | grep -v -i warn | sed -n '/^row /,$p'
  timeout 150 python3 -m mambast_cli.engine.bench --sizes 256,512,1024 --contents 128 --protocol 20x40 \
    --large 2160x3840 --curve none --no-baseline --json > $OUT/engine_o.json 2>/dev/null
  python3 -c "import json; r=json.load(open('$OUT/engine_o.json')); print([(x['size'], x['engine_img_per_s'], x['engine_b1_ms']) for x in r['rows']], r['uhd']['engine_ms'], [x['wall_s'] for x in r['protocol']['engine_runs']])"
elif [ "$PART" = F ]; then
  timeout 170 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size 512 --json > $OUT/folder_o.json 2>/dev/null
  python3 -c "import json; r=json.load(open('$OUT/folder_o.json'))['folder']; print({k: r.get(k) for k in ('wall_img_s', 'steady_img_s', 'warmup_s', 'batch_sizes', 'stages_s')})"
elif [ "$PART" = T ]; then
  for b in 8 16 32; do
    timeout 150 python3 -m mambast_cli.train.bench_train --batch-size $b --steps 20 2>/dev/null | tail -1
  done
fi
cp ~/.cache/mambast/cross_scan_tune.json $OUT/tune_o_part${PART:-H}.json 2>/dev/null

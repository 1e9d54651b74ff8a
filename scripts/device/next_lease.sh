#!/usr/bin/env bash
# Prepared in session 2, NOT yet run: what the next nvidia-h100-x1 lease should measure (all of it new since the
# last lease). ~6 minutes. Then write the numbers into BENCHMARKS.md and decide the defaults:
#   - segmented forward (tuner candidates FWD_SEG_CONFIGS): correct on the GPU? picked at 1080p / 4K? L-linearity?
#   - fused SS2D epilogue (MAMBAST_FUSED_MERGE=1): speed-up of the epilogue and of the engine; turn on if it pays.
#   - decoder form with GB = 1 among the candidates: what the tuner picks at 512² G=8 and G=64.
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
nvidia-smi -L
timeout 200 python3 kernels/check_gpu.py --out $OUT/check_full.json > $OUT/check_full.log 2>&1; tail -45 $OUT/check_full.log
timeout 240 python3 kernels/bench.py --only "L 1024|L 2048|4K|1080p|seg|merge|dec 512|dec512|256 G64|enc 512" \
  --out $OUT/bench.json > $OUT/bench.log 2>&1; grep -A60 "^row " $OUT/bench.log | cut -c1-160
for fm in 0 1; do
  MAMBAST_FUSED_MERGE=$fm timeout 150 python3 -m mambast_cli.engine.bench --weights mambast_cli/weights/default.safetensors \
    --sizes 256,512,1024 --protocol 20x40 --large 2160x3840 --curve none --no-baseline --json > $OUT/engine_fm$fm.json 2> $OUT/engine_fm$fm.err
  echo "== MAMBAST_FUSED_MERGE=$fm"
  python3 -c "import json; from mambast_cli.engine.bench import format_report; print(format_report(json.load(open('$OUT/engine_fm$fm.json'))))" 2>&1 | tail -14
done
MAMBAST_FUSED_MERGE=1 timeout 120 python3 scripts/profile_engine.py --sizes 512x512,1080x1920 --max-batch 16 --out $OUT/profile.json 2>&1 | grep -v -i warn

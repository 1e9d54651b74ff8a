#!/usr/bin/env bash
# Session 3 (run), nvidia-h100-x1, two calls (a call may run 10 minutes at most): PART=1 then PART=2 on the warm machine.
#   PART=1: full GPU parity (segmented forward rows included), then the kernel rows: L sweep 256² → 2048² (B = 1),
#           4K / 1080p (segmented candidates), decoder form with GB = 1 candidates, the fused epilogue.
#   PART=2: the engine with and without the fused SS2D epilogue (MAMBAST_FUSED_MERGE), then the engine profile.
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
if [ "${PART:-1}" = 1 ]; then
  nvidia-smi -L
  timeout 210 python3 kernels/check_gpu.py --out $OUT/check_full.json > $OUT/check_full.log 2>&1; tail -45 $OUT/check_full.log
  timeout 320 python3 kernels/bench.py --only "v2 L |4K|1080p|seg|merge norm|dec 512|dec512|256 G64|enc 512 B8 bf16 cl" \
    --out $OUT/bench.json > $OUT/bench.log 2>&1; grep -A80 "^row " $OUT/bench.log | cut -c1-170
else
  for fm in 0 1; do
    MAMBAST_FUSED_MERGE=$fm timeout 170 python3 -m mambast_cli.engine.bench --weights mambast_cli/weights/default.safetensors \
      --sizes 256,512,1024 --protocol 20x40 --large 2160x3840 --curve none --no-baseline --json > $OUT/engine_fm$fm.json 2> $OUT/engine_fm$fm.err
    echo "== MAMBAST_FUSED_MERGE=$fm"
    python3 -c "import json; from mambast_cli.engine.bench import format_report; print(format_report(json.load(open('$OUT/engine_fm$fm.json'))))" 2>&1 | tail -14
    tail -3 $OUT/engine_fm$fm.err
  done
  MAMBAST_FUSED_MERGE=1 timeout 150 python3 scripts/profile_engine.py --sizes 512x512,1080x1920 --max-batch 16 --out $OUT/profile.json 2>&1 | grep -v -i warn | tail -60
fi

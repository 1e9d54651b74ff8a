#!/usr/bin/env bash
# Session 2, last lease (nvidia-h100-x1): the reworked decoder-form forward (readout groups, a step's C rows adjacent),
# the encoder-shape config sweep, the backward's register-capped configs, and the engine with contents sharing one
# recurrence (MAMBAST_SHARE_RECURRENCE=1) vs one recurrence per content (=0). Bundled weights travel in the tree.
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
timeout 150 python3 kernels/check_gpu.py --quick --out $OUT/check.json > $OUT/check.log 2>&1; tail -15 $OUT/check.log
timeout 240 python3 kernels/bench.py --only "enc 512|dec 512|enc512|dec512|256 G64|256 B64|v3seq" --out $OUT/bench.json > $OUT/bench.log 2>&1
grep -A60 "^row " $OUT/bench.log | cut -c1-150
for sh in 0 1; do
  MAMBAST_SHARE_RECURRENCE=$sh timeout 170 python3 -m mambast_cli.engine.bench --weights mambast_cli/weights/default.safetensors \
    --sizes 256,512 --protocol 20x40 --large 0x0 --curve none --no-baseline --json > $OUT/engine_share$sh.json 2> $OUT/engine_share$sh.err
  echo "== MAMBAST_SHARE_RECURRENCE=$sh"; tail -2 $OUT/engine_share$sh.err
  python3 -c "import json; from mambast_cli.engine.bench import format_report; print(format_report(json.load(open('$OUT/engine_share$sh.json'))))" 2>&1 | tail -14
done

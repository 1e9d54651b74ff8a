#!/usr/bin/env bash
# Session 9, second lease (nvidia-h100-x1, one call, bundled weights out of the tree, PyAV wheel carried): v3's scan
# forward after the fix (Di / L unspecialised): GPU parity (check_gpu --quick, its v3 rows), `kernels/bench.py
# --only "^v3 "` (v3 against v2's session-8 picks), and the engine's 512² / 256² rows with v3 a tuner candidate
# and without (MAMBAST_SCAN3=0). Copies the tune cache to $OUT (bundled into kernels/tuned/h100.json).
python3 -m pip install -q --no-deps --no-index .whl/av-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 100 python3 kernels/check_gpu.py --quick 2>&1 | grep -E ", 2\)|, 200\)|, 168\)|rows ok"
timeout 260 python3 kernels/bench.py --only "^v3 " --out $OUT/v3bench2.json 2>&1 | grep -v -i warn | sed -n '/^row /,$p' | cut -c1-90
for v in 1 0; do
  MAMBAST_SCAN3=$v timeout 150 python3 -m mambast_cli.engine.bench --sizes 512,256 --contents 128 --protocol 0x0 --large 0x0 \
    --curve none --no-baseline --json > $OUT/engine512_v3$v.json 2>$OUT/engine512_v3$v.err
  python3 -c "import json; r=json.load(open('$OUT/engine512_v3$v.json')); print('v3=$v', json.dumps(r['rows']))" 2>&1 | tail -1
done
cp ~/.cache/mambast/cross_scan_tune.json $OUT/tune9b.json

#!/usr/bin/env bash
# Same lease, second call: whole model on GPU (ref vs Triton scan), training step throughput on 1 GPU.
set -o pipefail
export PYTHONUNBUFFERED=1
timeout 200 python3 scripts/gpu_model_check.py --out $OUT/model.json 2>&1 | tee $OUT/model.log | tail -12
timeout 200 python3 -m mambast_cli.train.bench_train --steps 30 2>&1 | tee $OUT/train1.log | tail -8
timeout 150 python3 -m mambast_cli.engine.bench --json > $OUT/ebench.json 2> $OUT/ebench.err; tail -5 $OUT/ebench.err
python3 -c "import json; from mambast_cli.engine.bench import format_report; print(format_report(json.load(open('$OUT/ebench.json'))))" 2>&1 | tee $OUT/ebench.txt | tail -30

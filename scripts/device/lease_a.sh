#!/usr/bin/env bash
# First GPU lease (nvidia-h100-x1): kernel parity + speed, whole-model parity, training-step throughput.
# Carry: .whl (efficientnet-lite0 + av wheels). Results under $OUT.
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | tail -2
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" | tee $OUT/env.txt
timeout 280 python3 kernels/check_gpu.py --out $OUT/check.json 2>&1 | tee $OUT/check.log | tail -40
timeout 250 python3 kernels/bench.py --out $OUT/kbench.json 2>&1 | tee $OUT/kbench.log | tail -50

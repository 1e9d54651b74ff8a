#!/usr/bin/env bash
# Training lease (nvidia-h100-x4), first call. Carry: .data and the efficientnet-lite0 wheel.
# Installs, checks the scan kernel's parity on GPU 0 (falls back to the first kernel if the check fails), then starts
# the training run in the background (setsid) so it survives this call; later calls watch it (train_watch.sh).
set -o pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python3 -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
nvidia-smi -L
STEPS=${STEPS:-3000}
if ! timeout 150 python3 kernels/check_gpu.py --quick > $OUT/check_quick.log 2>&1; then
  echo "new scan kernel failed its GPU check: falling back to v1"; export MAMBAST_SCAN_IMPL=v1; STEPS=${STEPS_V1:-1700}
fi
tail -12 $OUT/check_quick.log
mkdir -p runs/r1
setsid nohup torchrun --standalone --nproc_per_node=4 -m mambast_cli.train \
  --content .data/train/content --style .data/train/style --out runs/r1 --steps $STEPS --lr 2e-4 --warmup 200 \
  --time-limit ${TL:-12} --val-every 500 --sample-every 250 --ckpt-every 500 --log-every 25 --export-shards --workers 6 \
  --aug-rot90 --aug-hue 0.3 --aug-gray 0.1 --aug-multiscale 400 > runs/r1/stdout.log 2>&1 < /dev/null &
echo "launched STEPS=$STEPS impl=${MAMBAST_SCAN_IMPL:-default}"
sleep ${WAIT:-200}
tail -4 runs/r1/stdout.log; tail -3 runs/r1/log.jsonl 2>/dev/null
cp runs/r1/log.jsonl $OUT/ 2>/dev/null; ls runs/r1/samples 2>/dev/null | tail -2

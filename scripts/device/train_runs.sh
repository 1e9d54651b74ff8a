#!/usr/bin/env bash
# Session 7 training call (generalises train_ab.sh to N runs): data already in /tmp/train and the start weights in
# /tmp/wt from the earlier calls of the same lease. RUNS="name:content_weight:id1_weight[:seed] ..." starts one single-GPU
# fine-tune per entry, GPU 0, 1, ... in order, all identical but for those two weights; time-based cosine LR over $TL
# minutes. CPUS (a taskset list, default 0-31) keeps them off the cores a benchmark on another GPU uses. EMA (e.g.
# 0.999, session 7's `--ema`) keeps a moving average of the weights: validation then reports both ("raw").
# Started with setsid so they outlive this call; train_runs_watch.sh waits for them, evaluates and brings back weights.
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
DATA=${DATA:-/tmp/train}; INIT=${INIT:-/tmp/wt/default.safetensors}; TL=${TL:-15}; CPUS=${CPUS:-0-31}
ls $DATA/content | wc -l; sha256sum $INIT
gpu=0
for spec in ${RUNS:?RUNS=name:cw:id1 ...}; do
  IFS=: read -r name cw id1 seed <<< "$spec"
  mkdir -p runs/$name
  CUDA_VISIBLE_DEVICES=$gpu MAMBAST_TUNE_CACHE=/tmp/tune_$name.json setsid nohup taskset -c $CPUS python3 -m mambast_cli.train \
    --content $DATA/content --style $DATA/style --out runs/$name --init-weights $INIT \
    --steps 12000 --lr 1e-4 --warmup 100 --lr-schedule time --time-limit $TL --content-weight $cw --id1-weight $id1 ${EMA:+--ema $EMA} ${seed:+--seed $seed} \
    --val-every 1000 --sample-every 1000 --ckpt-every 2000 --log-every 50 --export-shards --workers 6 \
    --aug-rot90 --aug-hue 0.3 --aug-gray 0.1 --aug-multiscale 400 > runs/$name/stdout.log 2>&1 < /dev/null &
  gpu=$((gpu + 1))
done
sleep ${WAIT:-45}
for spec in $RUNS; do name=${spec%%:*}; echo "== $name"; tail -2 runs/$name/stdout.log | cut -c1-300; done
nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used --format=csv

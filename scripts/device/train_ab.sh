#!/usr/bin/env bash
# Session 3 training call (x2 kind; the data is already in /tmp/train and the start weights in /tmp/wt from the
# earlier calls of the same lease, see README.md here). Two single-GPU fine-tunes side by side, identical but for the
# content-loss weight: $RUN_A with $CW_A on GPU 0, $RUN_B with $CW_B on GPU 1 (and, if set, identity weights $ID1_A /
# $ID1_B: --id1-weight, default 70; issue 4's next run raises it). Time-based cosine LR over $TL minutes.
# Started with setsid so they outlive this call; train_ab_watch.sh brings back logs, samples and weights.
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
DATA=${DATA:-/tmp/train}; INIT=${INIT:-/tmp/wt/default.safetensors}; TL=${TL:-15}
ls $DATA/content | wc -l; ls -la $INIT
launch() { local gpu=$1 name=$2 cw=$3 id1=$4
  mkdir -p runs/$name
  CUDA_VISIBLE_DEVICES=$gpu MAMBAST_TUNE_CACHE=/tmp/tune_$name.json setsid nohup python3 -m mambast_cli.train \
    --content $DATA/content --style $DATA/style --out runs/$name --init-weights $INIT \
    --steps 12000 --lr 1e-4 --warmup 100 --lr-schedule time --time-limit $TL --content-weight $cw ${id1:+--id1-weight $id1} \
    --val-every 1000 --sample-every 1000 --ckpt-every 2000 --log-every 50 --export-shards --workers 6 \
    --aug-rot90 --aug-hue 0.3 --aug-gray 0.1 --aug-multiscale 400 > runs/$name/stdout.log 2>&1 < /dev/null &
}
launch 0 ${RUN_A:-e_a} ${CW_A:-20} ${ID1_A:-}
launch 1 ${RUN_B:-e_b} ${CW_B:-35} ${ID1_B:-}
sleep ${WAIT:-90}
for r in ${RUN_A:-e_a} ${RUN_B:-e_b}; do echo "== $r"; tail -3 runs/$r/stdout.log; done
nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used --format=csv

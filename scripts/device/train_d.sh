#!/usr/bin/env bash
# Session 2 training call (nvidia-h100-x2 / h200-x2; .data already on the warm machine from lease_d.sh, the bundled
# weights travel in the tree). Two single-GPU fine-tunes of the bundled model (run r1) side by side, identical but
# for the content-loss weight: d_a = 7 (paper), d_b = $CW_B. Both use the v3 scan backward, a time-based cosine LR
# (ends at the floor when --time-limit stops the run) and r1's augmentations. Started with setsid so they outlive
# this call; train_d_watch.sh brings back logs, samples and weights.
set -o pipefail
export PYTHONUNBUFFERED=1 MAMBAST_SCAN_BWD=v3
python3 -m pip install -q --no-deps --no-index .whl/efficientnet*.whl 2>/dev/null | tail -1   # no-op when installed
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
ls ${DATA:-.data/train}/content | wc -l
TL=${TL:-14}; CW_B=${CW_B:-12}
launch() { local gpu=$1 name=$2 cw=$3
  mkdir -p runs/$name
  CUDA_VISIBLE_DEVICES=$gpu MAMBAST_TUNE_CACHE=/tmp/tune_$name.json setsid nohup python3 -m mambast_cli.train \
    --content ${DATA:-.data/train}/content --style ${DATA:-.data/train}/style --out runs/$name --init-weights ${INIT:-default} \
    --steps 8000 --lr 1e-4 --warmup 100 --lr-schedule time --time-limit $TL --content-weight $cw \
    --val-every 1000 --sample-every 1000 --ckpt-every 2000 --log-every 50 --export-shards --workers 6 \
    --aug-rot90 --aug-hue 0.3 --aug-gray 0.1 --aug-multiscale 400 > runs/$name/stdout.log 2>&1 < /dev/null &
}
launch 0 d_a 7
launch 1 d_b $CW_B
sleep ${WAIT:-150}
for r in d_a d_b; do echo "== $r"; tail -3 runs/$r/stdout.log; done

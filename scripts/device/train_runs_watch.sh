#!/usr/bin/env bash
# Session 7 training, later calls. Waits until every run of $RUNS is done (or WAIT*10 s), prints their validation
# lines; EVAL=GPU then evaluates on that GPU (32 held-out pairs, as MODEL.md) the start weights, each run's model and
# the soups named in SOUPS="a+b ..." (parameter averages, scripts/average_weights.py), and PICK=name|a+b brings back
# that model's bf16 weights in <= 15.9 MiB shards (a call returns at most 8 files of 16 MiB: one model per call).
set -o pipefail
names=""; for spec in ${RUNS:?}; do names="$names ${spec%%:*}"; done
for i in $(seq 1 ${WAIT:-0}); do
  all=1; for r in $names; do grep -q '"event": "done"' runs/$r/log.jsonl 2>/dev/null || all=0; done
  [ $all = 1 ] && break
  sleep 10
done
for r in $names; do echo "== $r"; tail -1 runs/$r/stdout.log | cut -c1-200; grep '"val"' runs/$r/log.jsonl | tail -2 | cut -c1-330; done
if [ -n "$TAR" ]; then
  tar czf $OUT/runs_logs.tgz $(for r in $names; do echo runs/$r/log.jsonl runs/$r/stdout.log; ls runs/$r/samples/* 2>/dev/null | sort | tail -1; done) 2>/dev/null
fi
for s in $SOUPS; do
  [ -f runs/$s.safetensors ] || python3 scripts/average_weights.py $(echo $s | tr '+' ' ' | sed 's#\([^ ]*\)#runs/\1/model.safetensors#g') -o runs/$s.safetensors | tail -1
done
if [ -n "$EVAL" ]; then
  CUDA_VISIBLE_DEVICES=$EVAL python3 - $names $SOUPS <<'PY'
import sys
from mambast_cli.train.evaluate import evaluate
paths = [("start", "/tmp/wt/default.safetensors")] + [
    (n, f"runs/{n}.safetensors" if "+" in n else f"runs/{n}/model.safetensors") for n in sys.argv[1:]]
for i, (n, p) in enumerate(paths):
    r = evaluate(p, "/tmp/train/content", "/tmp/train/style", n_pairs=32, device="cuda")
    if i == 0:
        print("content image", {k: round(v, 4) for k, v in r["content_image"].items()})
        print("colour transfer", {k: round(v, 4) for k, v in r["color_transfer"].items()})
    print(f"{n:>12} model c {r['model']['content']:.4f} s {r['model']['style']:.4f} | identity c {r['identity']['content']:.4f}", flush=True)
PY
fi
if [ -n "$PICK" ]; then
  f=runs/$PICK/model.safetensors; case $PICK in *+*) f=runs/$PICK.safetensors;; esac
  python3 -c "from mambast_cli.train.shards import split_weights; print(split_weights('$f', '$OUT', max_bytes=int(15.9*2**20)))"
fi
ls -la $OUT

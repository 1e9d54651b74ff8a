#!/usr/bin/env bash
# Session 2 training, later calls: wait for both runs to finish (or WAIT*10 s), then bring back one tar of both runs'
# logs and sample sheets, plus the bf16 weights of run $PICK (if set) in <= 15.9 MiB shards (the machine returns at
# most 8 files, 16 MiB each, 64 MiB in all).
set -o pipefail
for i in $(seq 1 ${WAIT:-0}); do
  grep -q '"event": "done"' runs/d_a/log.jsonl 2>/dev/null && grep -q '"event": "done"' runs/d_b/log.jsonl 2>/dev/null && break
  sleep 10
done
for r in d_a d_b; do echo "== $r"; tail -2 runs/$r/stdout.log; grep '"val"' runs/$r/log.jsonl | tail -3 | cut -c1-600; done
tar czf $OUT/runs_logs.tgz runs/d_a/log.jsonl runs/d_b/log.jsonl runs/d_a/stdout.log runs/d_b/stdout.log \
  $(ls runs/d_a/samples/* runs/d_b/samples/* 2>/dev/null | sort | tail -6) 2>/dev/null; ls -la $OUT
if [ -n "$PICK" ] && [ -f runs/$PICK/model.safetensors ]; then
  python3 -c "from mambast_cli.train.shards import split_weights; print(split_weights('runs/$PICK/model.safetensors', '$OUT', max_bytes=int(15.9*2**20)))"
fi

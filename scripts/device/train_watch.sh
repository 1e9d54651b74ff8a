#!/usr/bin/env bash
# Training lease, later calls: wait, then bring back the log, the newest sample sheet and the bf16 weight shards.
set -o pipefail
for i in $(seq 1 ${WAIT:-55}); do
  grep -q '"event": "done"' runs/r1/log.jsonl 2>/dev/null && break
  sleep 10
done
tail -3 runs/r1/stdout.log; grep '"val"' runs/r1/log.jsonl | tail -2; tail -2 runs/r1/log.jsonl
cp runs/r1/log.jsonl $OUT/; s=$(ls runs/r1/samples/*.png 2>/dev/null | tail -1); [ -n "$s" ] && cp "$s" $OUT/
mkdir -p $OUT/shards && cp runs/r1/shards/* $OUT/shards/ 2>/dev/null; ls -la $OUT/shards

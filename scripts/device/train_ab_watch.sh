#!/usr/bin/env bash
# Session 3 training, later calls: wait until both runs are done (or WAIT*10 s), print their validation lines, bring
# back one tar of logs + latest samples, and the bf16 weights of run $PICK (if set) in <= 15.9 MiB shards (a call
# returns at most 8 files of 16 MiB, 64 MiB in all: one model per call).
set -o pipefail
A=${RUN_A:-e_a}; B=${RUN_B:-e_b}
for i in $(seq 1 ${WAIT:-0}); do
  grep -q '"event": "done"' runs/$A/log.jsonl 2>/dev/null && grep -q '"event": "done"' runs/$B/log.jsonl 2>/dev/null && break
  sleep 10
done
for r in $A $B; do echo "== $r"; tail -2 runs/$r/stdout.log; grep '"val"' runs/$r/log.jsonl | tail -4 | cut -c1-400; done
if [ -z "$NO_TAR" ]; then
  tar czf $OUT/runs_logs.tgz runs/$A/log.jsonl runs/$B/log.jsonl runs/$A/stdout.log runs/$B/stdout.log \
    $(ls runs/$A/samples/* 2>/dev/null | sort | tail -2) $(ls runs/$B/samples/* 2>/dev/null | sort | tail -2) 2>/dev/null
fi
if [ -n "$PICK" ] && [ -f runs/$PICK/model.safetensors ]; then
  python3 -c "from mambast_cli.train.shards import split_weights; print(split_weights('runs/$PICK/model.safetensors', '$OUT', max_bytes=int(15.9*2**20)))"
fi
ls -la $OUT

#!/usr/bin/env bash
# Session 4 (nvidia-h100-x1). The bundled weights are moved out of the tree for every call (random weights: speed and
# memory only) so the PyAV wheel can travel in each call: carry `.whl/av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl`.
#   PART=1: the channels-last CNN decoder (kernels/pad_nhwc.py + engine/cnn_nhwc.py): kernel rows, then the engine
#           with MAMBAST_NHWC_CNN=0 (the NCHW module, session 3's engine) and =1 (the new default), same machine.
#   PART=2: the image pipeline end to end (3000 512² JPEGs → JPEGs, `mambast bench --folder`), 1080p video with the
#           encode thread vs the encoder process, one 7680×4320 image + the memory-vs-pixels curve.
#   PART=3: the image pipeline again after the engine moved to its own thread (stage times), with the default and a
#           0.5 ms GIL switch interval, and at 256².
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index .whl/av-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
report() { python3 -c "import json,sys; from mambast_cli.engine.bench import format_report; print(format_report(json.load(open(sys.argv[1]))))" "$1" 2>&1 | tail -${2:-16}; }
if [ "${PART:-1}" = 1 ]; then
  nvidia-smi -L
  timeout 90 python3 kernels/bench.py --only "pad nhwc|merge norm gate 512" --out $OUT/bench_pad.json > $OUT/bench_pad.log 2>&1
  grep -A10 "^row " $OUT/bench_pad.log | cut -c1-170
  for nh in 0 1; do
    MAMBAST_NHWC_CNN=$nh timeout 200 python3 -m mambast_cli.engine.bench --sizes 256,512,1024 --protocol 20x40 \
      --large 2160x3840 --curve none --no-baseline --json > $OUT/engine_nhwc$nh.json 2> $OUT/engine_nhwc$nh.err
    echo "== MAMBAST_NHWC_CNN=$nh"; report $OUT/engine_nhwc$nh.json 18; tail -2 $OUT/engine_nhwc$nh.err
  done
elif [ "$PART" = 3 ]; then
  # the image pipeline after moving the engine onto its own thread (byte-bounded write queue, 2-batch decode window)
  timeout 150 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size 512 --json > $OUT/folder_a.json 2> $OUT/folder_a.err
  python3 -c "import json; r=json.load(open('$OUT/folder_a.json'))['folder']; r.pop('errors'); print(r)"; tail -2 $OUT/folder_a.err
  # the same with a 0.5 ms GIL switch interval (default 5 ms): is the engine thread starved of the GIL?
  timeout 150 python3 -c "import sys; sys.setswitchinterval(5e-4); sys.argv=['mambast','bench','--no-engine-rows','--folder','3000','--json']; from mambast_cli.cli import main; main()" > $OUT/folder_b.json 2> $OUT/folder_b.err
  python3 -c "import json; r=json.load(open('$OUT/folder_b.json'))['folder']; r.pop('errors'); print(r)"; tail -2 $OUT/folder_b.err
  timeout 100 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size 256 --json > $OUT/folder_c.json 2> $OUT/folder_c.err
  python3 -c "import json; r=json.load(open('$OUT/folder_c.json'))['folder']; r.pop('errors'); print(r)"; tail -2 $OUT/folder_c.err
else
  timeout 170 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size 512 --json > $OUT/bench_folder.json 2> $OUT/bench_folder.err
  python3 -c "import json; r=json.load(open('$OUT/bench_folder.json')); print(json.dumps(r.get('folder'), indent=1))" 2>&1 | tail -20
  tail -2 $OUT/bench_folder.err
  for m in thread process; do
    echo "== MAMBAST_VIDEO_ENCODER=$m"
    MAMBAST_VIDEO_ENCODER=$m timeout 120 python3 scripts/bench_video.py --frames 480 --presets superfast \
      --smooth 4 --json-out $OUT/bench_video_$m.json 2>&1 | tail -4
  done
  timeout 150 python3 -m mambast_cli.engine.bench --sizes 512 --contents 16 --protocol 0x0 --large 4320x7680 \
    --curve 512,1024,2048,3072,4096,5760 --no-baseline --json > $OUT/engine_8k.json 2> $OUT/engine_8k.err
  report $OUT/engine_8k.json 20; tail -2 $OUT/engine_8k.err
  for nh in 1 0; do
    echo "== profile MAMBAST_NHWC_CNN=$nh"
    MAMBAST_NHWC_CNN=$nh timeout 60 python3 scripts/profile_engine.py --random --sizes 512x512 --max-batch 1 2>&1 | grep -v -i warn | tail -14
  done
  MAMBAST_NHWC_CNN=1 timeout 90 python3 scripts/profile_engine.py --random --sizes 512x512,1080x1920 --max-batch 64 --out $OUT/profile.json 2>&1 | grep -v -i warn | tail -30
fi

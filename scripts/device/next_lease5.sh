#!/usr/bin/env bash
# Session 4 (nvidia-h100-x1). The bundled weights are moved out of the tree for every call (random weights: speed and
# memory only) so the PyAV wheel can travel in each call: carry `.whl/av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl`.
#   PART=1: the channels-last CNN decoder (kernels/pad_nhwc.py + engine/cnn_nhwc.py): kernel rows, then the engine
#           with MAMBAST_NHWC_CNN=0 (the NCHW module, session 3's engine) and =1 (the new default), same machine.
#   PART=2: the image pipeline end to end (3000 512² JPEGs → JPEGs, `mambast bench --folder`), 1080p video with the
#           encode thread vs the encoder process, one 7680×4320 image + the memory-vs-pixels curve.
#   PART=3: the image pipeline again after the engine moved to its own thread (stage times), with the default and a
#           0.5 ms GIL switch interval, and at 256².
#   PART=5: `mambast stylize` on 3000 512² JPEGs with the bundled weights (weights in the tree, carry nothing):
#           MAMBAST_WORKERS_PER_GPU=1 vs the default (auto: several worker processes on the GPU).
#   PART=6: CUDA graphs of the engine forward: GPU tests, engine rows with MAMBAST_CUDA_GRAPHS=0 / 1, folder, video.
#   PART=7: the folder again after the per-batch hand-off to the writers; 4K with graphs limited to ≤ 1 MP pictures.
#   PART=8: the folder with the engine thread's time split (upload, launch, GPU wait, download), graphs on / off.
#   PART=9: the folder with a reused pinned upload buffer (512², 256²), and 1 / 2 / 4 workers.
#   PART=10: the folder with the batch stacked into pinned memory on the calling thread (two buffers in turn).
#   PART=11: the folder with the copy back queued (the engine thread never waits for the GPU).
#   PART=12: the folder with torch.stack into the staging buffer (twice per size), 2 and 3 workers.
#   PART=13 (not run yet: the session's device time ran out): in-process, 2 and 4 workers, now that worker
#           processes stack with numpy again (torch.stack in every worker halved their rate in PART=12).
#   PART=4: the folder run with 1-4 worker processes sharing the GPU (scripts/bench_multi.py --workers-per-gpu).
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index .whl/av-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
# folder NAME SIZE: the image pipeline end to end (`mambast bench --folder 3000`), its row printed without the errors
folder() {
  timeout 100 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size $2 --json > $OUT/$1.json 2> $OUT/$1.err
  python3 -c "import json; r=json.load(open('$OUT/$1.json'))['folder']; r.pop('errors'); print(r)"; tail -2 $OUT/$1.err
}
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
elif [ "$PART" = 13 ]; then
  # multi-worker runs after worker processes went back to numpy stacking (RunOptions.stack_with_torch=False)
  timeout 250 python3 scripts/bench_multi.py --gpus 1 --workers-per-gpu 2,4 --images 3000 --json-out $OUT/multi13.json 2>&1 | grep -v -i warn | tail -6
elif [ "$PART" = 12 ]; then
  # the calling thread stacks with torch.stack (one GIL hand-back per batch) instead of np.stack
  for run in 512_a 512_b 256_a 256_b; do
    folder folder12_$run ${run%_*}
  done
  timeout 200 python3 scripts/bench_multi.py --gpus 1 --workers-per-gpu 2,3 --images 3000 --no-in-process --json-out $OUT/multi12.json 2>&1 | grep -v -i warn | tail -5
elif [ "$PART" = 11 ]; then
  # the engine thread no longer waits for the GPU: the copy back is queued, the dispatcher waits for its event
  for sz in 512 256; do
    folder folder11_$sz $sz
  done
  folder folder11_512b 512
  timeout 200 python3 scripts/bench_multi.py --gpus 1 --workers-per-gpu 1,2 --images 3000 --no-in-process --json-out $OUT/multi11.json 2>&1 | grep -v -i warn | tail -5
elif [ "$PART" = 10 ]; then
  # the batch is stacked into two pinned buffers (in turn) by the calling thread; the engine thread only copies
  for sz in 512 256; do
    folder folder10_$sz $sz
  done
  timeout 200 python3 scripts/bench_multi.py --gpus 1 --workers-per-gpu 1,4 --images 3000 --no-in-process --json-out $OUT/multi10.json 2>&1 | grep -v -i warn | tail -5
elif [ "$PART" = 9 ]; then
  # a reused pinned staging buffer for the upload; folder at 512 and 256, 1 and 4 workers
  for sz in 512 256; do
    folder folder9_$sz $sz
  done
  timeout 200 python3 scripts/bench_multi.py --gpus 1 --workers-per-gpu 1,2,4 --images 3000 --no-in-process --json-out $OUT/multi9.json 2>&1 | grep -v -i warn | tail -6
elif [ "$PART" = 8 ]; then
  # where the engine thread's time goes inside the pipeline (engine_upload / _launch / _gpu_wait / _download)
  folder folder8 512
  MAMBAST_CUDA_GRAPHS=0 folder folder8b 512
elif [ "$PART" = 7 ]; then
  # one budget reservation + one hand-off per batch from the engine thread (pipeline/run.py submit_writes); graphs
  # only for pictures up to 1 MP
  for sz in 512 256; do
    folder folder7_$sz $sz
  done
  timeout 100 python3 -m mambast_cli.engine.bench --sizes 512 --protocol 0x0 --large 2160x3840 --curve none --no-baseline --json > $OUT/engine7.json 2> $OUT/engine7.err
  report $OUT/engine7.json 12
  timeout 200 python3 scripts/bench_multi.py --gpus 1 --workers-per-gpu 1,4 --images 3000 --no-in-process --json-out $OUT/multi7.json 2>&1 | grep -v -i warn | tail -5
elif [ "$PART" = 6 ]; then
  # CUDA graphs of the engine's batch forward (engine/graphs.py): GPU tests, engine rows off/on, folder, video
  timeout 100 python3 scripts/check_graphs.py 2>&1 | tail -3
  timeout 100 python3 scripts/check_graphs.py --size 512x512 --batch 16 2>&1 | tail -3
  for g in 0 1; do
    MAMBAST_CUDA_GRAPHS=$g timeout 150 python3 -m mambast_cli.engine.bench --sizes 256,512,1024 --protocol 20x40 \
      --large 2160x3840 --curve none --no-baseline --json > $OUT/engine_graphs$g.json 2> $OUT/engine_graphs$g.err
    echo "== MAMBAST_CUDA_GRAPHS=$g"; report $OUT/engine_graphs$g.json 17; tail -2 $OUT/engine_graphs$g.err
  done
  folder folder_g 512
  timeout 100 python3 scripts/bench_video.py --frames 480 --presets superfast --smooth 4 --json-out $OUT/video_g.json 2>&1 | tail -4
elif [ "$PART" = 5 ]; then
  # the CLI as a user runs it, bundled weights (carry nothing): one process vs 4 workers on the GPU (when this ran,
  # unset meant "auto" = 4 workers here; auto is opt-in and means 2 since, so the 4 are set explicitly)
  python3 -c "from mambast_cli.pipeline.bench import make_images; from pathlib import Path; make_images(Path('/tmp/f/in'), 3000, 512); make_images(Path('/tmp/f/s'), 1, 512, seed=10000)"
  for w in 1 auto; do
    if [ $w = 1 ]; then export MAMBAST_WORKERS_PER_GPU=1; else export MAMBAST_WORKERS_PER_GPU=4; fi
    echo "== workers $w"
    t0=$(date +%s.%N)
    python3 -m mambast_cli stylize /tmp/f/in --style /tmp/f/s/img00000.jpg -o /tmp/f/out_$w --json 2>/tmp/f/err_$w | tail -1
    echo "wall of the whole command: $(python3 -c "print(round($(date +%s.%N) - $t0, 2))") s"; tail -2 /tmp/f/err_$w
    ls /tmp/f/out_$w | wc -l
  done
  python3 - <<'PY'
import filecmp, os
a, b = "/tmp/f/out_1", "/tmp/f/out_auto"
names = sorted(os.listdir(a))
same = sum(filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False) for n in names)
print(f"identical outputs, 1 process vs auto workers: {same}/{len(names)}")
PY
elif [ "$PART" = 4 ]; then
  # several worker processes sharing the one GPU (each its own GIL): `--devices 0,0,...`
  timeout 400 python3 scripts/bench_multi.py --gpus 1 --workers-per-gpu 1,2,3,4 --images 3000 --json-out $OUT/multi.json 2>&1 | grep -v -i warn | tail -9
elif [ "$PART" = 3 ]; then
  # the image pipeline after moving the engine onto its own thread (byte-bounded write queue, 2-batch decode window)
  timeout 150 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size 512 --json > $OUT/folder_a.json 2> $OUT/folder_a.err
  python3 -c "import json; r=json.load(open('$OUT/folder_a.json'))['folder']; r.pop('errors'); print(r)"; tail -2 $OUT/folder_a.err
  # the same with a 0.5 ms GIL switch interval (default 5 ms): is the engine thread starved of the GIL?
  timeout 150 python3 -c "import sys; sys.setswitchinterval(5e-4); sys.argv=['mambast','bench','--no-engine-rows','--folder','3000','--json']; from mambast_cli.cli import main; main()" > $OUT/folder_b.json 2> $OUT/folder_b.err
  python3 -c "import json; r=json.load(open('$OUT/folder_b.json'))['folder']; r.pop('errors'); print(r)"; tail -2 $OUT/folder_b.err
  folder folder_c 256
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

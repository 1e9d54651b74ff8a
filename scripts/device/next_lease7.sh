#!/usr/bin/env bash
# Session 6's CPU-side changes, to measure first next session on nvidia-h100-x1 (bundled weights moved out of the
# tree; carry `.whl/av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl`). Each item with its baseline in the same call.
#   PART=1: the image folder after the writers' GIL fix (JPEG encoding into a memfd; MAMBAST_ENCODE_MEMFD=0 is the
#           old BytesIO path): Pillow's scaling on 16 cores, the host side alone, then the real folder, both ways;
#           then the folder with nvJPEG (decode_resize now converts a batch in one call).
#   PART=2: several worker processes on the GPU (never measured with numpy staging; session 5's PART=6).
#   PART=3: the video job (as in session 6, now with the main thread's waits), the same with the encoder process
#           (frames through shared memory since session 6), then with the decoder process too.
#   PART=4: the engine rows (this machine against session 6's).
set -o pipefail
[ -n "$BENCH_GPU" ] && export CUDA_VISIBLE_DEVICES=$BENCH_GPU   # session 7: beside a training run on the other GPUs
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-index .whl/av-*.whl 2>&1 | tail -1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
host() {  # $1 label, env in the caller
  timeout 100 python3 scripts/bench_host_pipeline.py --images 3000 2>&1 | tail -1 | python3 -c "
import json,sys; d=json.loads(sys.stdin.read()); print('$1', {k:d[k] for k in ('wall_img_s','steady_img_s','cpu_ms_per_img')}, {k:round(v,1) for k,v in d['stages_s'].items() if v>0.05})"
}
folder() {
  timeout 100 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size $2 --json > $OUT/$1.json 2> $OUT/$1.err
  python3 -c "import json; r=json.load(open('$OUT/$1.json'))['folder']; r.pop('errors'); print('$1', r)"; tail -2 $OUT/$1.err
}
if [ "${PART:-1}" = 1 ]; then
  timeout 60 python3 scripts/probe_pillow_gil.py --threads 8 --n 400
  host memfd; MAMBAST_ENCODE_MEMFD=0 host bytesio; host memfd
  timeout 60 python3 scripts/bench_host_pipeline.py --images 3000 --no-codecs 2>&1 | tail -1 | cut -c1-300
  folder warm_tune 512 > /dev/null          # tunes the scans for this machine's batch shapes (not a result)
  folder folder7_memfd 512; MAMBAST_ENCODE_MEMFD=0 folder folder7_bytesio 512; folder folder7_memfd_b 512
  MAMBAST_GPU_DECODE=1 folder folder7_nvjpeg 512
  folder folder7_256 256
  cp ~/.cache/mambast/cross_scan_tune.json $OUT/tune_part1.json   # for kernels/tuned/ (scripts/bundle_tune_picks.py)
elif [ "$PART" = 5 ]; then   # session 7: PART=1's folder rows again on an idle machine (PART=1 ran beside training)
  timeout 150 python3 -m mambast_cli bench --no-engine-rows --folder 3000 --folder-size 512 --json > /dev/null 2>&1
  folder folder7c_memfd 512; MAMBAST_ENCODE_MEMFD=0 folder folder7c_bytesio 512; MAMBAST_GPU_DECODE=1 folder folder7c_nvjpeg 512
  timeout 150 python3 scripts/bench_multi.py --gpus 1 --workers-per-gpu 2 --images 3000 --json-out $OUT/multi7c.json 2>&1 | grep -v -i warn | tail -4
elif [ "$PART" = 2 ]; then
  timeout 250 python3 scripts/bench_multi.py --gpus 1 --workers-per-gpu 1,2,4 --images 3000 --json-out $OUT/multi7.json 2>&1 | grep -v -i warn | tail -6
elif [ "$PART" = 3 ]; then
  V="python3 scripts/bench_video.py --frames 480 --presets superfast --smooth 4 --workdir /tmp/bv7"   # one clip for all
  timeout 200 $V --json-out $OUT/video7.json 2>&1 | grep -v -i warn | tail -3
  # the encoder process (frames through shared memory, YUV planes), then the decoder process too (session 6)
  MAMBAST_VIDEO_ENCODER=process timeout 120 $V --job-only --json-out $OUT/video7_enc.json 2>&1 | grep -v -i warn | tail -1
  MAMBAST_VIDEO_ENCODER=process MAMBAST_VIDEO_DECODER=process timeout 120 $V --job-only \
    --json-out $OUT/video7_encdec.json 2>&1 | grep -v -i warn | tail -1
  timeout 120 $V --job-only --json-out $OUT/video7_again.json 2>&1 | grep -v -i warn | tail -1     # the default again
elif [ "$PART" = 4 ]; then
  timeout 180 python3 -m mambast_cli.engine.bench --sizes 256,512,1024 --protocol 20x40 --large 2160x3840 --curve none \
    --no-baseline --json > $OUT/engine7.json 2> $OUT/engine7.err
  python3 -c "import json,sys; from mambast_cli.engine.bench import format_report; print(format_report(json.load(open(sys.argv[1]))))" $OUT/engine7.json | tail -17
  cp ~/.cache/mambast/cross_scan_tune.json $OUT/tune_part4.json
fi

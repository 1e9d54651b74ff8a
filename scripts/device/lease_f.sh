#!/usr/bin/env bash
# Session 2, final call (nvidia-h100-x1): where the engine's GPU time goes at 512² and at 1080p (video frames).
set -o pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -1
nvidia-smi -L
timeout 200 python3 scripts/profile_engine.py --sizes 512x512,1080x1920,256x256 --out $OUT/profile.json 2>&1 | grep -v Warn

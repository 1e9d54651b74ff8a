"""How much PyAV's frame conversion and libx264 encoding hold Python's GIL (why the video job's encode thread and the
thread that launches the model's GPU kernels do not overlap; docs/video.md, Speed).

For each step, 40 frames of 1920x1080: its time alone, its time while a pure-Python loop runs in another thread,
and how fast that loop runs meanwhile (100 % = the step never holds the GIL). x264 gets one thread, so the two
threads need only two cores.

    python scripts/probe_av_gil.py [SWITCH_INTERVAL_S]      # default 0.005, Python's own default

Then the video job's case: the writer fed from a thread while the main thread runs Python, with the encode thread
(VideoWriter) and with the encoder process (ProcessVideoWriter, MAMBAST_VIDEO_ENCODER=process); then the reader
in its thread and in the decoder process (MAMBAST_VIDEO_DECODER=process).
"""
import io
import sys
import threading
import time

import av
import numpy as np

sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))

W, H, N = 1920, 1080, 40
img = (np.random.default_rng(0).integers(0, 255, (H, W, 3))).astype(np.uint8)
yuv = np.random.default_rng(1).integers(0, 255, (H * 3 // 2, W)).astype(np.uint8)
def make_enc():
    out = av.open(io.BytesIO(), "w", format="mp4")
    vs = out.add_stream("libx264", rate=30); vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
    vs.codec_context.options = {"preset": "superfast", "crf": "18", "threads": "1"}
    return out, vs
frames_yuv = [av.VideoFrame.from_ndarray(yuv, format="yuv420p") for _ in range(N)]
def job(kind):
    if kind == "from_ndarray rgb24":
        for i in range(N): av.VideoFrame.from_ndarray(img, format="rgb24")
    elif kind == "rgb24 -> yuv420p reformat":
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        for i in range(N): f.reformat(format="yuv420p")
    elif kind == "yuv420p -> rgb24 to_ndarray":   # the video reader's conversion of every decoded frame
        for f in frames_yuv: f.to_ndarray(format="rgb24")
    elif kind == "decode (libx264 stream)":
        with av.open(io.BytesIO(clip())) as inp:
            for _ in inp.decode(video=0): pass
    elif kind == "from_ndarray yuv420p":
        for i in range(N): av.VideoFrame.from_ndarray(yuv, format="yuv420p")
    elif kind == "encode (yuv420p frames)":
        out, vs = make_enc()
        for i, f in enumerate(frames_yuv):
            f.pts = i
            for p in vs.encode(f): out.mux(p)
        for p in vs.encode(): out.mux(p)
        out.close()
_clip: list[bytes] = []
def clip() -> bytes:
    """N frames encoded once (superfast), for the decode step."""
    if not _clip:
        buf = io.BytesIO()
        out = av.open(buf, "w", format="mp4")
        vs = out.add_stream("libx264", rate=30); vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.codec_context.options = {"preset": "superfast", "crf": "18", "threads": "1"}
        for i, f in enumerate(frames_yuv):
            f.pts = i
            for p in vs.encode(f): out.mux(p)
        for p in vs.encode(): out.mux(p)
        out.close()
        _clip.append(buf.getvalue())
    return _clip[0]
def spin(th):
    n = 0; t = time.perf_counter()
    while th.is_alive(): n += 1
    return n / (time.perf_counter() - t)
def base():
    n = 0; t = time.perf_counter()
    while time.perf_counter() - t < 1.0: n += 1
    return n
def writer_probe() -> None:
    """The video job's case: a writer encodes 40 frames from a thread (as the encode thread does) while the main
    thread runs Python (as the model's kernel launches do). Encode thread vs `MAMBAST_VIDEO_ENCODER=process`."""
    import os
    import tempfile
    from fractions import Fraction

    from mambast_cli.video.encoder_proc import ProcessVideoWriter
    from mambast_cli.video.io import VideoInfo, VideoWriter

    with tempfile.TemporaryDirectory() as d:
        info = VideoInfo(path=os.path.join(d, "none.mp4"), coded_width=W, coded_height=H, rotation=0, width=W,
                         height=H, time_base=Fraction(1, 30), rate=Fraction(30), frames=N, duration_s=N / 30,
                         start_s=0.0, declared_end_s=None, codec="h264", pix_fmt="yuv420p", colorspace=1,
                         color_range=1, color_primaries=1, color_trc=1)
        for name, cls, planes in (("encode thread", VideoWriter, False), ("encoder process", ProcessVideoWriter, False),
                                  ("encode thread, YUV", VideoWriter, True),
                                  ("encoder process, YUV", ProcessVideoWriter, True)):
            w = cls(os.path.join(d, f"{name[:6]}{planes}.mp4"), info, width=W, height=H, preset="superfast", threads=1,
                    copy=False)
            t0 = time.perf_counter()

            def feed() -> None:
                for i in range(N):
                    w.write_yuv420(yuv, i) if planes else w.write(img, i)
                w.commit()
            th = threading.Thread(target=feed)
            th.start()
            r = spin(th)
            th.join()
            print(f"{name:21} 40 frames in {time.perf_counter() - t0:5.2f} s; a Python loop in the main thread ran at "
                  f"{r / b:4.0%} of its speed meanwhile")


def reader_probe() -> None:
    """The video job's reader: 40 1080p frames read (decode + rgb24) from a thread while the main thread runs Python,
    with the reader in that thread (`read_frames`) and in a child process (`read_frames_in_process`,
    MAMBAST_VIDEO_DECODER=process)."""
    import os
    import tempfile

    from mambast_cli.video import io as vio
    from mambast_cli.video.decoder_proc import read_frames_in_process

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "clip.mp4")
        with open(path, "wb") as f:
            f.write(clip())
        info = vio.probe(path)
        for name, read in (("reader thread", vio.read_frames), ("decoder process", read_frames_in_process)):
            n = []
            t0 = time.perf_counter()
            th = threading.Thread(target=lambda: n.extend(1 for x in read(info, size=(W, H))
                                                          if isinstance(x, vio.DecodedFrame)))
            th.start()
            r = spin(th)
            th.join()
            print(f"{name:21} {len(n)} frames in {time.perf_counter() - t0:5.2f} s; a Python loop in the main thread "
                  f"ran at {r / b:4.0%} of its speed meanwhile")


def step_probe() -> None:
    """Each PyAV step alone vs beside a Python loop."""
    global b
    sys.setswitchinterval(float(sys.argv[1]) if len(sys.argv) > 1 else 0.005)
    b = base()
    clip()
    for kind in ["from_ndarray rgb24", "rgb24 -> yuv420p reformat", "from_ndarray yuv420p", "encode (yuv420p frames)",
                 "decode (libx264 stream)", "yuv420p -> rgb24 to_ndarray"]:
        t = time.perf_counter(); job(kind); alone = time.perf_counter() - t
        th = threading.Thread(target=job, args=(kind,)); t = time.perf_counter(); th.start(); r = spin(th); th.join(); both = time.perf_counter() - t
        print(f"{kind:28} alone {alone*1000/N:6.2f} ms/frame, with a Python loop beside it {both*1000/N:6.2f} ms/frame; loop at {r/b:4.0%} of its speed")


if __name__ == "__main__":
    step_probe()
    writer_probe()
    reader_probe()

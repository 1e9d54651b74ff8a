"""Video in and out with PyAV: probe, demux + decode to upright RGB frames, encode + mux, copy other streams.

Owns every PyAV call of the ``video`` command. Knows nothing about the model and never prints.
Raises InputError for an unreadable, corrupt or truncated input and OutputError when the output cannot be written.

Decisions (the user-facing docs should repeat them):
- **Rotation**: frames are turned upright before stylisation (the display matrix of the source is honoured, in
  steps of 90°; flips in the matrix are ignored) and the output carries no rotation tag. Brush strokes then have the
  orientation the viewer sees, and image sequences (which cannot carry a tag) look the same as video outputs.
- **Odd sizes** with a chroma-subsampled pixel format (yuv420p, H.264's default): the last column and/or row is
  cropped (at most 1 px each) for the encoder; image sequences keep the exact size.
- **Timestamps**: the output video stream has the source stream's time base, each frame keeps its source pts (VFR
  stays VFR); the muxer may choose a finer time base on disk, which keeps the times. With ``start`` the output is
  shifted so that its first frame is at 0, and copied streams are shifted by the same amount.
- **Colour**: frames are converted to RGB with the source's matrix and range (unspecified: BT.709 from 720 lines
  up, BT.601 below; limited range), and back with the same; the source's colour tags are copied to the output.
- **Other streams**: audio and subtitle streams are remuxed packet by packet (no re-encoding) when the output
  container accepts their codec; otherwise they are dropped with a warning.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from mambast_cli.errors import InputError, OutputError, UsageError
from mambast_cli.io.files import FRAMES_DIR_NAME, temp_path

if TYPE_CHECKING:
    import numpy as np

# output container per file extension
CONTAINERS: dict[str, str] = {
    ".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi",
}
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mts", ".m2ts", ".ts", ".mpg", ".mpeg", ".wmv", ".flv",
    ".3gp", ".ogv", ".mxf", ".gif",
})
IMAGE_SEQUENCE_FORMATS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp"}
# codecs that take a CRF option (others ignore --crf)
_CRF_CODECS = {"libx264", "libx264rgb", "libx265", "libvpx-vp9", "libvpx", "libsvtav1", "libaom-av1"}
# what a container can hold when copying packets (None: anything; let the muxer decide)
_COPY_OK: dict[str, set[str] | None] = {
    "mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac", "mov_text", "mp2", "dts", "truehd"},
    "mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le", "pcm_s16be", "pcm_s24be", "pcm_f32le",
            "mov_text", "mp2", "opus", "flac"},
    "webm": {"opus", "vorbis", "webvtt"},
    "matroska": None,
    "avi": {"mp3", "ac3", "pcm_s16le", "mp2", "aac"},
}


@dataclass
class CopyStream:
    """An audio or subtitle stream of the input to remux unchanged."""

    index: int
    kind: str          # "audio" | "subtitle"
    codec: str


@dataclass
class VideoInfo:
    """What the job needs to know about an input before decoding it."""

    path: str
    coded_width: int
    coded_height: int
    rotation: int                  # counter-clockwise degrees to turn coded frames upright: 0, 90, 180, 270
    width: int                     # upright size
    height: int
    time_base: Fraction
    rate: Fraction | None          # average frame rate (a hint for VFR sources)
    frames: int                    # declared frame count (0: unknown)
    duration_s: float | None
    start_s: float
    declared_end_s: float | None   # stream start + duration when the container records it (for truncation checks)
    codec: str
    pix_fmt: str | None
    colorspace: int
    color_range: int
    color_primaries: int
    color_trc: int
    copy_streams: list[CopyStream] = field(default_factory=list)


def _input_error(path: str, e: BaseException) -> InputError:
    text = getattr(e, "strerror", None) or str(e)
    msg = str(text).strip().splitlines()[0] if str(text).strip() else e.__class__.__name__
    # PyAV messages repeat the file name; keep them short
    msg = msg.replace(f": '{path}'", "").replace(f"'{path}'", "")
    return InputError(f"cannot read video {path}: {msg}", hint="the file is corrupt, truncated or not a video")


def _norm_rotation(deg: float | int | None) -> int:
    if not deg:
        return 0
    r = int(round(float(deg) / 90.0)) * 90 % 360
    return r


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Read an input's container header and its first video frame's properties.

    Args:
        path: a video file.

    Returns:
        Its VideoInfo.

    Raises:
        InputError: not a readable video (missing, corrupt, truncated header, no video stream).
    """
    import av

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise InputError(f"no such video: {p}")
    try:
        with av.open(p, "r") as c:
            if not c.streams.video:
                raise InputError(f"{p} has no video stream")
            vs = c.streams.video[0]
            cc = vs.codec_context
            rotation = 0
            first = None
            try:
                for f in c.decode(vs):
                    first = f
                    break
            except av.error.FFmpegError as e:
                raise _input_error(p, e) from e
            if first is None:
                raise InputError(f"{p}: no decodable video frame", hint="the file is corrupt or truncated")
            rotation = _norm_rotation(getattr(first, "rotation", 0))
            cw, ch = first.width, first.height
            w, h = (ch, cw) if rotation in (90, 270) else (cw, ch)
            dur = None
            start = float(vs.start_time * vs.time_base) if vs.start_time is not None and vs.time_base else 0.0
            declared_end = None
            if vs.duration is not None and vs.time_base is not None:
                dur = float(vs.duration * vs.time_base)
                declared_end = start + dur
            elif c.duration is not None:
                dur = c.duration / 1_000_000
            copies = []
            for s in c.streams:
                if s.type in ("audio", "subtitle") and s.codec_context is not None:
                    copies.append(CopyStream(s.index, s.type, s.codec_context.name))
            rate = vs.average_rate or vs.guessed_rate or vs.base_rate
            return VideoInfo(
                path=p, coded_width=cw, coded_height=ch, rotation=rotation, width=w, height=h,
                time_base=Fraction(vs.time_base) if vs.time_base else Fraction(1, 90000),
                rate=Fraction(rate) if rate else None, frames=int(vs.frames or 0), duration_s=dur, start_s=start,
                declared_end_s=declared_end,
                codec=cc.name, pix_fmt=first.format.name,
                colorspace=int(first.colorspace), color_range=int(first.color_range),
                color_primaries=int(getattr(first, "color_primaries", 2)), color_trc=int(getattr(first, "color_trc", 2)),
                copy_streams=copies,
            )
    except InputError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise _input_error(p, e) from e


# ------------------------------------------------------------------------------------------------ colour helpers
def rgb_matrix(colorspace: int, height: int) -> int:
    """The YUV↔RGB matrix to use (a swscale Colorspace value) for a source's colorspace tag.

    Args:
        colorspace: the AVColorSpace tag (2 = unspecified).
        height: the frame height (for the unspecified case: 709 from 720 lines up, else 601).

    Returns:
        1 (BT.709), 5 (BT.601), 4 (FCC), 7 (SMPTE 240M) or 9 (BT.2020).
    """
    if colorspace in (1, 4, 5, 7, 9):
        return colorspace
    if colorspace == 6:    # SMPTE 170M is BT.601
        return 5
    if colorspace == 10:   # BT.2020 constant luminance: closest swscale has
        return 9
    return 1 if height >= 720 else 5


def rgb_range(color_range: int) -> int:
    """Range for swscale: the source's (1 limited, 2 full), limited when unspecified."""
    return 2 if color_range == 2 else 1


# ------------------------------------------------------------------------------------------------ reading
@dataclass
class DecodedFrame:
    """One upright RGB frame and its presentation time."""

    pts: int               # in the source video stream's time base, minus the start shift
    image: "np.ndarray"    # (H, W, 3) uint8, upright, at the processing size


@dataclass
class CopiedPacket:
    """A packet of a copied stream (already shifted)."""

    index: int             # input stream index
    packet: Any


def read_frames(
    info: VideoInfo, *, size: tuple[int, int], start_s: float = 0.0, duration_s: float | None = None,
    copy: bool = True, stats: dict[str, float] | None = None,
) -> Iterator[DecodedFrame | CopiedPacket]:
    """Demux and decode an input: upright RGB frames at the processing size, interleaved with copied packets.

    Frames come in presentation order with strictly increasing pts (repeated pts are dropped). With ``start_s`` the
    decoder seeks to the key frame before it, frames before it are dropped, and every timestamp (copied packets too)
    is shifted so that the first kept frame is at 0. Without it, the source's timestamps are kept unchanged.

    Args:
        info: from :func:`probe`.
        size: (width, height) upright processing size.
        start_s: first time to keep, seconds from the stream's start.
        duration_s: how many seconds to keep (None: to the end).
        copy: also yield the packets of ``info.copy_streams``.
        stats: if given, ``stats["decode_s"]`` accumulates the time spent here.

    Yields:
        DecodedFrame and CopiedPacket items.

    Raises:
        InputError: a demux or decode error (corrupt or truncated input).
    """
    import time

    import av
    import numpy as np

    p = info.path
    W, H = size
    cw, ch = (H, W) if info.rotation in (90, 270) else (W, H)   # coded-orientation size to scale to
    k = info.rotation // 90
    matrix = rgb_matrix(info.colorspace, info.coded_height)
    rng = rgb_range(info.color_range)
    interp = "AREA" if (cw < info.coded_width or ch < info.coded_height) else "BICUBIC"
    t_clock = time.perf_counter
    spent = 0.0
    try:
        c = av.open(p, "r")
    except (av.error.FFmpegError, OSError) as e:
        raise _input_error(p, e) from e
    try:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        tb = vs.time_base
        copies = {cs.index: c.streams[cs.index] for cs in info.copy_streams} if copy else {}
        t_begin = info.start_s + max(0.0, start_s)
        t_end = None if duration_s is None else t_begin + duration_s
        if start_s > 0:
            try:
                c.seek(int(t_begin / tb), stream=vs, backward=True, any_frame=False)
            except av.error.FFmpegError:
                pass  # fall back to decoding from the start
        shift_s: float | None = None if start_s > 0 else 0.0
        shift_pts = 0
        last_pts: int | None = None
        video_done = False
        ended: set[int] = set()          # copied streams past the end time
        pending: list[CopiedPacket] = []   # copied packets seen before the first kept frame (when shifting)
        step = max(1, int(round(1 / (float(info.rate) * float(tb))))) if info.rate else 1
        n_video_packets = 0
        last_end_s = 0.0
        t0 = t_clock()
        for packet in c.demux(vs, *copies.values()):
            if packet.stream.index in copies:
                if packet.size == 0 or packet.dts is None:
                    continue
                ptime = float((packet.pts if packet.pts is not None else packet.dts) * packet.time_base)
                if start_s > 0 and ptime < t_begin - 1e-6:
                    continue
                if t_end is not None and ptime >= t_end:
                    ended.add(packet.stream.index)
                    if video_done and len(ended) == len(copies):
                        break
                    continue
                item = CopiedPacket(packet.stream.index, packet)
                if shift_s is None:
                    pending.append(item)
                else:
                    _shift_packet(packet, shift_s)
                    spent += t_clock() - t0
                    yield item
                    t0 = t_clock()
                continue
            if video_done:
                if not copies or len(ended) == len(copies):
                    break
                continue
            if packet.size:
                n_video_packets += 1
                if packet.pts is not None:
                    last_end_s = max(last_end_s, float((packet.pts + (packet.duration or 0)) * tb))
            try:
                frames = vs.decode(packet)
            except av.error.FFmpegError as e:
                raise _input_error(p, e) from e
            for f in frames:
                pts = f.pts if f.pts is not None else (last_pts + step if last_pts is not None else 0)
                ftime = float(pts * tb)
                if ftime < t_begin - 1e-6 and start_s > 0:
                    continue
                if t_end is not None and ftime >= t_end - 1e-6:
                    video_done = True
                    break
                if shift_s is None:   # first kept frame: fix the shift, release the copied packets held back
                    shift_s = ftime
                    shift_pts = pts
                    for item in pending:
                        if float(item.packet.pts * item.packet.time_base) >= shift_s - 1e-6:
                            _shift_packet(item.packet, shift_s)
                            yield item
                    pending.clear()
                out_pts = pts - shift_pts
                if last_pts is not None and out_pts <= last_pts:
                    continue   # repeated or backwards timestamp: the muxer would refuse it
                last_pts = out_pts
                rgb = f.reformat(width=cw, height=ch, format="rgb24", src_colorspace=matrix, dst_colorspace=matrix,
                                 src_color_range=rng, dst_color_range=2, interpolation=interp)
                arr = rgb.to_ndarray()
                if k:
                    arr = np.ascontiguousarray(np.rot90(arr, k=k))
                spent += t_clock() - t0
                yield DecodedFrame(out_pts, arr)
                t0 = t_clock()
            if video_done and not copies:
                break
        spent += t_clock() - t0
        if not video_done:
            _check_complete(info, n_video_packets, last_end_s, from_start=start_s <= 0)
    except av.error.FFmpegError as e:
        raise _input_error(p, e) from e
    finally:
        c.close()
        if stats is not None:
            stats["decode_s"] = stats.get("decode_s", 0.0) + spent


def _check_complete(info: VideoInfo, n_packets: int, last_end_s: float, *, from_start: bool) -> None:
    """Raise InputError when the demuxer stopped before the end the container's index promises (a truncated file:
    MP4/MOV demuxers stop silently at the end of the data)."""
    if from_start and info.frames > 0 and n_packets < info.frames:
        raise InputError(f"{info.path} is truncated: {n_packets} of {info.frames} video frames present",
                         hint="the file was cut short (copy or download it again)")
    if info.declared_end_s is not None and info.rate and last_end_s > 0:
        if last_end_s < info.declared_end_s - 0.5 / float(info.rate):
            raise InputError(f"{info.path} is truncated: video data ends at {last_end_s:.2f}s of "
                             f"{info.declared_end_s:.2f}s", hint="the file was cut short (copy or download it again)")


def _shift_packet(packet: Any, shift_s: float) -> None:
    if not shift_s:
        return
    d = int(round(shift_s / float(packet.time_base)))
    if packet.pts is not None:
        packet.pts -= d
    if packet.dts is not None:
        packet.dts -= d


# ------------------------------------------------------------------------------------------------ writing
def default_ext(codec: str) -> str:
    """The container extension that suits an encoder when the output name is chosen for the user."""
    c = codec.lower()
    if c.startswith("prores") or c in ("dnxhd", "qtrle"):
        return ".mov"
    if c in ("ffv1", "huffyuv", "utvideo", "libx264rgb"):
        return ".mkv"
    if c.startswith("libvpx"):
        return ".webm"
    return ".mp4"


def choose_pix_fmt(codec: str, wanted: str | None = None) -> str:
    """The encoder pixel format: ``wanted`` if given, else yuv420p when the encoder has it, else its first.

    Args:
        codec: an FFmpeg encoder name.
        wanted: a pixel format the user asked for.

    Returns:
        A pixel format name.

    Raises:
        UsageError: unknown encoder, or a format it does not take.
    """
    import av

    try:
        cod = av.codec.Codec(codec, "w")
    except Exception as e:  # av raises UnknownCodecError (a ValueError) or FFmpegError
        raise UsageError(f"unknown video encoder {codec!r}", hint="try libx264, libx265, libvpx-vp9, prores_ks or ffv1") from e
    if cod.type != "video":
        raise UsageError(f"{codec!r} is not a video encoder")
    names = [f.name for f in (cod.video_formats or [])]
    if wanted:
        if names and wanted not in names:
            raise UsageError(f"{codec} cannot encode {wanted}", hint=f"it takes: {', '.join(names[:8])}")
        return wanted
    if not names or "yuv420p" in names:
        return "yuv420p"
    return names[0]


def encoder_size(width: int, height: int, pix_fmt: str) -> tuple[int, int]:
    """Crop an odd width/height by 1 px where the pixel format subsamples chroma in that direction.

    Args:
        width: processing width.
        height: processing height.
        pix_fmt: the encoder's pixel format.

    Returns:
        (width, height) the encoder accepts.
    """
    import av

    fmt = av.video.format.VideoFormat(pix_fmt)
    w = width - 1 if width % 2 and fmt.chroma_width(width) * 2 != width and fmt.chroma_width(width) != width else width
    h = height - 1 if height % 2 and fmt.chroma_height(height) != height else height
    return max(2, w), max(2, h)


def _fill_plane(plane: Any, rows: "np.ndarray") -> None:
    """Copy (h, row_bytes) uint8 rows into a PyAV plane, whose lines may be padded (line_size >= row_bytes)."""
    import numpy as np

    dst = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)
    dst[: rows.shape[0], : rows.shape[1]] = rows


def frame_from_rgb(image: "np.ndarray") -> Any:
    """A PyAV rgb24 VideoFrame holding a copy of an (H, W, 3) uint8 array.

    Same frame as ``av.VideoFrame.from_ndarray(image, format="rgb24")``, by one numpy copy into the plane: that call
    took 12.6 ms per 1080p frame on the CI box (PyAV 18), this one 0.36 ms (BENCHMARKS.md, session 5).

    Args:
        image: (H, W, 3) uint8.

    Returns:
        The frame.
    """
    import av

    h, w, _ = image.shape
    f = av.VideoFrame(w, h, "rgb24")
    _fill_plane(f.planes[0], image.reshape(h, w * 3))
    return f


def frame_from_yuv420(planes: "np.ndarray") -> Any:
    """A PyAV yuv420p VideoFrame from packed planes (see `video.yuv.yuv420_planes`), by numpy copies.

    Args:
        planes: (H * 3 // 2, W) uint8: the Y plane's H rows, then U and V (H/2 × W/2 values each) back to back.

    Returns:
        The frame (same as ``av.VideoFrame.from_ndarray(planes, format="yuv420p")``).
    """
    import av

    h, w = planes.shape[0] * 2 // 3, planes.shape[1]
    f = av.VideoFrame(w, h, "yuv420p")
    flat = planes.reshape(-1)
    q = (h // 2) * (w // 2)
    _fill_plane(f.planes[0], planes[:h])
    _fill_plane(f.planes[1], flat[h * w : h * w + q].reshape(h // 2, w // 2))
    _fill_plane(f.planes[2], flat[h * w + q : h * w + 2 * q].reshape(h // 2, w // 2))
    return f


class VideoWriter:
    """Encode RGB frames and remux copied packets into a temporary file; :meth:`commit` renames it into place.

    Not thread-safe: one thread calls write/mux/commit/abort.
    """

    def __init__(
        self, final: str | os.PathLike[str], info: VideoInfo, *, width: int, height: int, codec: str = "libx264",
        pix_fmt: str = "yuv420p", crf: int | None = 18, preset: str | None = "veryfast", threads: int = 0,
        copy: bool = True, on_warning: Any = None,
    ) -> None:
        """Open the output.

        Args:
            final: the output file (its extension picks the container).
            info: the source's VideoInfo (time base, rate, colour, streams to copy).
            width: encoded width (even where the pixel format needs it: see :func:`encoder_size`).
            height: encoded height.
            codec: FFmpeg encoder name.
            pix_fmt: encoder pixel format.
            crf: constant-rate factor for encoders that take one.
            preset: encoder speed preset (x264/x265/svt-av1 names), None for the encoder's default.
            threads: encoder threads (0: the encoder's automatic choice).
            copy: remux ``info.copy_streams`` the container accepts.
            on_warning: callable(str) told about dropped streams.

        Raises:
            UsageError: unknown container extension.
            OutputError: the file cannot be created.
        """
        import av

        self.final = os.fspath(final)
        ext = Path(self.final).suffix.lower()
        if ext not in CONTAINERS:
            raise UsageError(f"unknown video container {ext or '(none)'} for {self.final}",
                             hint=f"use one of {', '.join(sorted(CONTAINERS))}, or a %06d.png image sequence")
        self.fmt = CONTAINERS[ext]
        self.tmp = temp_path(self.final)
        self.info = info
        self.width, self.height = width, height
        self.pix_fmt = pix_fmt
        self._matrix = rgb_matrix(info.colorspace, info.coded_height)
        self._range = rgb_range(info.color_range)
        self.stats: dict[str, float] = {"encode_s": 0.0}
        parent = os.path.dirname(self.final) or "."
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create folder {parent}: {e.strerror}") from e
        opts = {"movflags": "+faststart"} if self.fmt in ("mp4", "mov") else {}
        try:
            self.out = av.open(self.tmp, "w", format=self.fmt, options=opts)
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"cannot write {self.final}: {e}") from e
        try:
            self.vs = self.out.add_stream(codec, rate=info.rate if info.rate else None)
            cc = self.vs.codec_context
            cc.width, cc.height, cc.pix_fmt = width, height, pix_fmt
            cc.time_base = info.time_base
            self.vs.time_base = info.time_base
            cc.thread_count = threads
            cc.thread_type = "AUTO" if codec not in ("libx264", "libx265") else cc.thread_type
            if info.colorspace != 2:
                cc.colorspace = info.colorspace
            if info.color_range:
                cc.color_range = info.color_range
            if info.color_primaries != 2:
                cc.color_primaries = info.color_primaries
            if info.color_trc != 2:
                cc.color_trc = info.color_trc
            o: dict[str, str] = {}
            if crf is not None and codec in _CRF_CODECS:
                o["crf"] = str(crf)
                if codec.startswith("libvpx"):
                    o["b"] = "0"
            if preset and codec in ("libx264", "libx264rgb", "libx265", "libsvtav1"):
                o["preset"] = str(preset)
            if threads and codec in ("libx264", "libx264rgb"):
                o["threads"] = str(threads)
            cc.options = o
            self.copy_map: dict[int, Any] = {}
            if copy and info.copy_streams:
                self._add_copies(on_warning)
            self.out.start_encoding()
        except BaseException as e:
            self.abort()
            if isinstance(e, (av.error.FFmpegError, ValueError)):
                raise OutputError(f"cannot start encoding {self.final} with {codec}: {e}") from e
            raise

    def _add_copies(self, on_warning: Any) -> None:
        import av

        allowed = _COPY_OK.get(self.fmt)
        with av.open(self.info.path, "r") as src:
            for cs in self.info.copy_streams:
                if allowed is not None and cs.codec not in allowed:
                    if on_warning:
                        on_warning(f"{cs.kind} stream #{cs.index} ({cs.codec}) cannot go into .{self.fmt} without "
                                   f"re-encoding: dropped (use an .mkv output to keep it)")
                    continue
                try:
                    st = self.out.add_stream_from_template(src.streams[cs.index])
                except (av.error.FFmpegError, ValueError) as e:
                    if on_warning:
                        on_warning(f"{cs.kind} stream #{cs.index} ({cs.codec}) cannot be copied: {e}: dropped")
                    continue
                self.copy_map[cs.index] = st

    def write(self, image: "np.ndarray", pts: int) -> None:
        """Encode one RGB frame.

        Args:
            image: (H, W, 3) uint8 at least the encoder size (cropped to it here).
            pts: presentation time in the source time base.
        """
        import time

        t0 = time.perf_counter()
        if image.shape[0] != self.height or image.shape[1] != self.width:
            image = image[: self.height, : self.width]
        f = frame_from_rgb(image)
        # chroma as the mean of each 2×2 block ("AREA"), the conversion video/yuv.py does on the GPU
        f = f.reformat(format=self.pix_fmt, src_colorspace=self._matrix, dst_colorspace=self._matrix,
                       src_color_range=2, dst_color_range=self._range, interpolation="AREA")
        self._encode(f, pts)
        self.stats["encode_s"] += time.perf_counter() - t0

    def yuv420_layout(self) -> tuple[int, bool] | None:
        """``(matrix, full_range)`` for :meth:`write_yuv420` (see `video.yuv.yuv420_planes`), or None when this output
        needs RGB frames (another pixel format, or a matrix video/yuv.py does not know)."""
        from mambast_cli.video.yuv import supports

        if not supports(self.pix_fmt, self._matrix, self.width, self.height):
            return None
        return self._matrix, self._range == 2

    def write_yuv420(self, planes: "np.ndarray", pts: int) -> None:
        """Encode one frame given as packed YUV 4:2:0 planes (only where :meth:`yuv420_layout` is not None).

        Args:
            planes: (height * 3 // 2, width) uint8 from `video.yuv.yuv420_planes`, at the encoder size.
            pts: presentation time in the source time base.
        """
        import time

        t0 = time.perf_counter()
        f = frame_from_yuv420(planes)
        f.colorspace, f.color_range = self._matrix, self._range
        self._encode(f, pts)
        self.stats["encode_s"] += time.perf_counter() - t0

    def _encode(self, f: Any, pts: int) -> None:
        import av

        f.pts = pts
        f.time_base = self.info.time_base
        try:
            for pkt in self.vs.encode(f):
                self.out.mux(pkt)
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"cannot write {self.final}: {e}") from e

    def mux_copy(self, index: int, packet: Any) -> None:
        """Remux one packet of a copied stream (dropped if that stream is not in the output).

        Args:
            index: the input stream index.
            packet: the PyAV packet (already time-shifted).
        """
        import av

        st = self.copy_map.get(index)
        if st is None:
            return
        packet.stream = st
        try:
            self.out.mux(packet)
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"cannot write {self.final}: {e}") from e

    def commit(self) -> None:
        """Flush the encoder, close the file and rename it to the final name.

        Raises:
            OutputError: flushing, closing or renaming failed (the temporary file is removed).
        """
        import time

        import av

        t0 = time.perf_counter()
        try:
            for pkt in self.vs.encode(None):
                self.out.mux(pkt)
            self.out.close()
            os.replace(self.tmp, self.final)
        except (av.error.FFmpegError, OSError) as e:
            self.abort()
            raise OutputError(f"cannot write {self.final}: {e}") from e
        self.stats["encode_s"] += time.perf_counter() - t0

    def abort(self) -> None:
        """Close and delete the temporary file (safe to call twice)."""
        try:
            out = getattr(self, "out", None)
            if out is not None:
                out.close()
        except Exception:  # noqa: BLE001  closing a half-written file may fail; it is deleted anyway
            pass
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def parse_sequence_pattern(path: str) -> str | None:
    """If ``path`` is an image-sequence pattern (``frames/%06d.png``), return it normalised, else None.

    Args:
        path: the -o value.

    Returns:
        The pattern, or None for a plain file or folder.

    Raises:
        UsageError: a pattern with an unsupported extension or more than one ``%d``.
    """
    import re

    name = os.path.basename(path)
    m = re.findall(r"%0?\d*d", name)
    if not m:
        return None
    if len(m) > 1 or "%" in os.path.dirname(path):
        raise UsageError(f"image-sequence pattern {path!r} must have exactly one %d (or %06d) in the file name")
    ext = Path(name).suffix.lower()
    if ext not in IMAGE_SEQUENCE_FORMATS:
        raise UsageError(f"image sequence {path!r}: unknown image type {ext or '(none)'}",
                         hint="use .png (lossless), .jpg or .webp")
    return path


class ImageSequenceWriter:
    """Write frames as numbered images into a hidden temporary folder; :meth:`commit` moves them into place.

    The frame numbers start at 1 (FFmpeg's image2 convention). Nothing appears under the final names until every
    frame is written.
    """

    def __init__(self, pattern: str, *, width: int, height: int) -> None:
        """Prepare the temporary folder.

        Args:
            pattern: ``dir/%06d.png``-style path.
            width: frame width.
            height: frame height.

        Raises:
            OutputError: the folder cannot be created.
        """
        self.pattern = pattern
        self.dir = os.path.dirname(pattern) or "."
        self.name = os.path.basename(pattern)
        self.fmt = IMAGE_SEQUENCE_FORMATS[Path(self.name).suffix.lower()]
        self.width, self.height = width, height
        self.count = 0
        self.stats: dict[str, float] = {"encode_s": 0.0}
        self.tmpdir = temp_path(os.path.join(self.dir, FRAMES_DIR_NAME))
        try:
            os.makedirs(self.tmpdir)
        except OSError as e:
            raise OutputError(f"cannot create folder {self.dir}: {e.strerror}") from e

    def final_name(self, number: int) -> str:
        """The final path of frame ``number`` (1-based)."""
        return os.path.join(self.dir, self.name % number)

    def write(self, image: "np.ndarray", pts: int) -> None:
        """Write the next frame (pts is not stored: image files carry no time).

        Args:
            image: (H, W, 3) uint8.
            pts: ignored.
        """
        import time

        from PIL import Image

        from mambast_cli.io import encode_image

        t0 = time.perf_counter()
        self.count += 1
        data = encode_image(Image.fromarray(image), self.fmt)
        try:
            with open(os.path.join(self.tmpdir, self.name % self.count), "wb") as fh:
                fh.write(data)
        except OSError as e:
            raise OutputError(f"cannot write {self.final_name(self.count)}: {e.strerror}") from e
        self.stats["encode_s"] += time.perf_counter() - t0

    def mux_copy(self, index: int, packet: Any) -> None:
        """Image sequences carry no audio: ignored."""

    def commit(self) -> None:
        """Move every frame to its final name, then remove the temporary folder.

        Raises:
            OutputError: a move failed.
        """
        try:
            for i in range(1, self.count + 1):
                os.replace(os.path.join(self.tmpdir, self.name % i), self.final_name(i))
            os.rmdir(self.tmpdir)
        except OSError as e:
            self.abort()
            raise OutputError(f"cannot move frames into {self.dir}: {e.strerror}") from e

    def abort(self) -> None:
        """Remove the temporary folder and what it holds."""
        shutil.rmtree(self.tmpdir, ignore_errors=True)

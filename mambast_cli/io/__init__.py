"""Images in and out: bytes → RGB pictures → [0,1] tensors, and back to files written atomically.

Owns decoding (Pillow, content sniffing, EXIF orientation, mode normalisation, decompression-bomb limit),
resizing, encoding (jpg/png/webp) and the file-system side of outputs (safe names, atomic writes).
Knows nothing about the model, never prints. Raises InputError for a bad input (per item) and OutputError
when the output location cannot be written (fatal for the run).
"""
from mambast_cli.io.images import (
    DEFAULT_MAX_PIXELS,
    FORMATS,
    decode_image,
    encode_image,
    image_to_array,
    image_to_tensor,
    load_image,
    looks_like_image,
    read_input_bytes,
    resize_image,
    target_size,
    tensor_to_image,
    upload_frames,
    frames_to_device,
)
from mambast_cli.io.files import (
    PART_MARKER,
    clean_stale_parts,
    discard_parts,
    ensure_dir,
    is_within,
    out_path,
    output_name,
    probe_writable,
    safe_component,
    write_atomic,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "PART_MARKER",
    "clean_stale_parts",
    "discard_parts",
    "decode_image",
    "ensure_dir",
    "out_path",
    "probe_writable",
    "encode_image",
    "image_to_array",
    "image_to_tensor",
    "is_within",
    "load_image",
    "looks_like_image",
    "output_name",
    "read_input_bytes",
    "resize_image",
    "safe_component",
    "target_size",
    "tensor_to_image",
    "upload_frames",
    "frames_to_device",
    "write_atomic",
]

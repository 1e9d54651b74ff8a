"""Split a safetensors weights file into small safetensors shards, and join them back bit-for-bit.

Why: the GPU machine returns files of at most 16 MiB, while the bf16 default model is ~54 MB. Each shard is a
valid safetensors file holding a subset of the tensors; every shard carries the original file's metadata plus
`shard` ("i/n") and `tensors_sha256` (mambast's checksum of all tensors, as `load_weights` verifies it).
`join_shards` rebuilds an equivalent file (same tensors, same metadata; the JSON header's key order may differ,
so the bytes need not match) and checks that checksum.

Owns only this file format. Does not load models, print or touch anything but the paths it is given.
Writes are atomic (temp file + rename).
"""
from __future__ import annotations

import json
from pathlib import Path

from mambast_cli.errors import WeightsError

MAX_SHARD_BYTES = 15 * 1024 * 1024
_HEADER_PER_TENSOR = 256  # generous JSON header bytes per tensor entry (name, dtype, shape, offsets)


def split_weights(path: str | Path, out_dir: str | Path | None = None, max_bytes: int = MAX_SHARD_BYTES) -> list[Path]:
    """Split a safetensors file into shards `<stem>-00001-of-0000N.safetensors` of at most `max_bytes` each.

    Args:
        path: the safetensors file.
        out_dir: where to write the shards (default: beside the file).
        max_bytes: size limit per shard file (a single tensor larger than this raises WeightsError).
    Returns:
        The shard paths, in order.
    """
    from safetensors import safe_open

    from mambast_cli.model.weights import write_safetensors

    path = Path(path)
    out = Path(out_dir) if out_dir is not None else path.parent
    out.mkdir(parents=True, exist_ok=True)
    from mambast_cli.model.weights import tensors_sha256

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    digest = tensors_sha256(tensors)
    groups: list[list[str]] = [[]]
    size = 0
    budget = max_bytes - 1024 - len(json.dumps(meta).encode()) - len(path.name)
    for k in sorted(tensors):
        nb = tensors[k].numel() * tensors[k].element_size() + _HEADER_PER_TENSOR + len(k)
        if nb > budget:
            raise WeightsError(f"tensor {k} ({nb} bytes) does not fit in a {max_bytes}-byte shard")
        if size + nb > budget and groups[-1]:
            groups.append([])
            size = 0
        groups[-1].append(k)
        size += nb
    n = len(groups)
    paths = []
    for i, keys in enumerate(groups):
        p = out / f"{path.stem}-{i + 1:05d}-of-{n:05d}.safetensors"
        write_safetensors({k: tensors[k] for k in keys}, p,
                          {**meta, "shard": f"{i + 1}/{n}", "tensors_sha256": digest, "file_name": path.name})
        paths.append(p)
    return paths


def find_shards(folder: str | Path, stem: str = "model") -> list[Path]:
    """The shards of `<stem>` in a folder, in order (empty list if none)."""
    return sorted(Path(folder).glob(f"{stem}-*-of-*.safetensors"))


def join_shards(shards: list[Path] | str | Path, out: str | Path) -> Path:
    """Join shards (a list, or a folder holding `model-*-of-*.safetensors`) back into one file.

    Args:
        shards: shard paths or their folder.
        out: the file to write (atomically).
    Returns:
        `out`. Raises WeightsError when a shard is missing, they disagree, or the result's sha256 is wrong.
    """
    from safetensors import safe_open

    from mambast_cli.model.weights import write_safetensors

    paths = find_shards(shards) if isinstance(shards, (str, Path)) else list(shards)
    if not paths:
        raise WeightsError(f"no shards found in {shards}")
    tensors = {}
    metas = []
    for p in paths:
        try:
            with safe_open(str(p), framework="pt") as f:
                metas.append(dict(f.metadata() or {}))
                tensors.update({k: f.get_tensor(k) for k in f.keys()})
        except Exception as e:  # safetensors raises its own error types
            raise WeightsError(f"{p}: not a readable safetensors shard ({e})") from e
    n = int(metas[0].get("shard", "1/1").split("/")[1])
    got = sorted(int(m.get("shard", "0/0").split("/")[0]) for m in metas)
    if got != list(range(1, n + 1)) or len({m.get("tensors_sha256") for m in metas}) != 1:
        raise WeightsError(f"shards are incomplete or from different files: have {got} of {n}")
    from mambast_cli.model.weights import tensors_sha256

    if tensors_sha256(tensors) != metas[0]["tensors_sha256"]:
        raise WeightsError(f"joined tensors do not match the original's checksum ({metas[0].get('file_name')})")
    meta = {k: v for k, v in metas[0].items() if k not in ("shard", "tensors_sha256", "file_name")}
    return write_safetensors(tensors, Path(out), meta)

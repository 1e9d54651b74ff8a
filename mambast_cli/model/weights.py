"""Weights: our safetensors format, the official three-file checkpoints, and the bundled default.

Our format is one safetensors file whose keys are `MambaST.state_dict()` keys (embedding.*, mamba.*, cnn.*) and
whose metadata holds:
    format  = "mambast-weights/1"
    config  = JSON of MambaSTConfig
    source  = free text (where the weights came from)
    sha256  = sha256 over the tensors (sorted keys, name + dtype + shape + bytes), checked on every load
    extra   = optional JSON (training recipe, source file hashes, ...)

Official checkpoints (spec §4.3) are plain state dicts loaded with torch.load(weights_only=True), so a pickle
payload is refused; shapes are checked against the manifest of the default config, then the sanity checks of
spec §4.3 run. This module owns no model maths and never prints.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..errors import WeightsError
from .mambast import MambaST, MambaSTConfig

FORMAT = "mambast-weights/1"
BUNDLED = Path(__file__).resolve().parent.parent / "weights" / "default.safetensors"


def tensors_sha256(sd: dict[str, torch.Tensor]) -> str:
    """Content hash of a state dict: independent of file layout, sensitive to every name, dtype, shape and byte."""
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().contiguous().cpu()
        h.update(f"{k}|{str(t.dtype)}|{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def default_weights_path() -> Path | None:
    """The bundled default weights, or None when this build ships none."""
    return BUNDLED if BUNDLED.is_file() else None


def unused_keys(cfg: MambaSTConfig, keys) -> set[str]:
    """Parameters the forward never reads with this config (spec §4.1): the encoders' in_style_proj, every
    skip_scale2, and new_ps unless CAPE is on. They exist only so that official checkpoints load strictly."""
    out = set()
    for k in keys:
        if k.endswith(".skip_scale2"):
            out.add(k)
        elif k.startswith("mamba.encoder_") and k.endswith("self_attention.in_style_proj.weight"):
            out.add(k)
        elif k.startswith("mamba.new_ps.") and not cfg.use_cape:
            out.add(k)
    return out


def save_weights(path: str | Path, model: MambaST, source: str, extra: dict | None = None,
                 dtype: torch.dtype | None = None, drop_unused: bool = False) -> str:
    """Write `model` to a safetensors file atomically (temp + rename). Returns the recorded sha256.

    drop_unused: leave out the parameters the forward never reads (`unused_keys`); `load_model` fills them back
    (zeros, or ones for skip_scale2). Saves ~7 MB on the bundled bf16 model."""
    sd = {k: (v.to(dtype) if (dtype is not None and v.is_floating_point()) else v).detach().contiguous().cpu()
          for k, v in model.state_dict().items()}
    if drop_unused:
        for k in unused_keys(model.cfg, list(sd)):
            del sd[k]
    digest = tensors_sha256(sd)
    meta = {"format": FORMAT, "config": json.dumps(model.cfg.to_dict()), "source": source, "sha256": digest,
            "extra": json.dumps(extra or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(sd, path, meta)
    return digest


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> Path:
    """Write a safetensors file atomically (`.NAME.part`, then rename) with the usual file mode (0666 less the
    umask, like any file the user makes). safetensors' own `save_file` creates its files 0600, which kept exported
    weights from the rest of a studio's team.

    Args:
        tensors: name → CPU tensor.
        path: the final file.
        metadata: string → string, stored in the header.

    Returns:
        The path written.
    """
    from safetensors.torch import save

    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    try:
        with open(tmp, "wb") as f:
            f.write(save(tensors, metadata=metadata))
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: str | Path) -> dict:
    """The metadata block of a mambast safetensors file (no tensors loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types
        raise WeightsError(f"{path}: not a readable safetensors file ({e})",
                           hint="mambast loads only .safetensors weights (never pickles); convert official .pth "
                                "checkpoints with `mambast weights import-official`") from e


def weights_id(path: str | Path) -> str:
    """The sha256 recorded in a weights file (identifies the weights for cache keys)."""
    return read_metadata(path).get("sha256", "")


def load_weights(path: str | Path, verify: bool = True) -> tuple[MambaSTConfig, dict[str, torch.Tensor], dict]:
    """Read a mambast safetensors file. Returns (config, state_dict, metadata); raises WeightsError on any problem."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a mambast weights file (format={meta.get('format')!r})",
                           hint="convert official checkpoints with `mambast weights import-official`")
    try:
        sd = load_file(str(path))
        cfg = MambaSTConfig.from_dict(json.loads(meta["config"]))
    except Exception as e:
        raise WeightsError(f"{path}: cannot read weights ({e})") from e
    if verify and tensors_sha256(sd) != meta.get("sha256"):
        raise WeightsError(f"{path}: checksum mismatch, the file is corrupt or was modified")
    return cfg, sd, meta


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> MambaST:
    """Build a MambaST from a mambast weights file, strictly, in eval mode."""
    cfg, sd, _ = load_weights(path)
    model = MambaST(cfg)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    own = model.state_dict()
    for k in unused_keys(cfg, own.keys()) - set(sd):   # left out by save_weights(drop_unused=True)
        sd[k] = torch.ones_like(own[k]) if k.endswith(".skip_scale2") else torch.zeros_like(own[k])
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path}: weights do not match the architecture ({str(e).splitlines()[0]})") from e
    return model.to(device=device, dtype=dtype).eval()


# ---------------------------------------------------------------------------------------------------------------
# official checkpoints


def _torch_load_plain(path: str | Path) -> dict[str, torch.Tensor]:
    """torch.load with weights_only=True: tensors and plain containers only, never arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: file not found")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: refused to load: not a plain tensor checkpoint ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:160]})",
                           hint="only plain state dicts are accepted; a file that needs unpickling of code is unsafe") from e
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a plain state dict of tensors")
    return obj


def _check_strict(path: str | Path, module: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in sd.items()}
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}" + ("..." if len(missing) > 3 else ""))
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}" + ("..." if len(unexpected) > 3 else ""))
        if wrong:
            parts.append("shape " + ", ".join(f"{k} {got[k]}≠{want[k]}" for k in wrong[:3]))
        hint = None
        xp = sd.get("encoder_c.layers.0.self_attention.x_proj_weight")
        if xp is not None and xp.shape[0] != 4:
            hint = f"x_proj_weight has {xp.shape[0]} direction(s): this is the single/double-direction variant, not supported"
        raise WeightsError(f"{path}: does not match the official layout: " + "; ".join(parts), hint=hint)


def sanity_checks(model: MambaST) -> list[str]:
    """Spec §4.3 checks on loaded official weights. Returns warnings (empty when everything looks as expected)."""
    warnings = []
    sd = model.state_dict()
    for k, v in sd.items():
        if k.endswith("skip_scale2") and not torch.all(v == 1):
            warnings.append(f"{k} is not exactly 1.0 (unused parameter was modified)")
    lim = (6 / 1536) ** 0.5 + 1e-6
    for k, v in sd.items():
        if k.startswith("mamba.encoder_") and k.endswith("in_style_proj.weight") and v.abs().max() > lim:
            warnings.append(f"{k} exceeds the xavier bound {lim:.4f}: the encoders' in_style_proj was trained?")
    if sd["mamba.new_ps.weight"].abs().max() > 512 ** -0.5 + 1e-6:
        warnings.append("new_ps weights exceed the default init bound: this checkpoint was probably trained with "
                        "--use_pos_embed; pass use_cape=True")
    return warnings


def import_official(emb_path: str | Path, mamba_path: str | Path, dec_path: str | Path,
                    cfg: MambaSTConfig | None = None) -> tuple[MambaST, dict]:
    """Load the three official files strictly into a MambaST. Returns (model, info) where info holds the source file
    sha256s and the sanity-check warnings."""
    model = MambaST(cfg or MambaSTConfig())
    info: dict = {"files": {}, "warnings": []}
    for path, module in ((emb_path, model.embedding), (mamba_path, model.mamba), (dec_path, model.cnn)):
        sd = _torch_load_plain(path)
        _check_strict(path, module, sd)
        module.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
        info["files"][Path(path).name] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    info["warnings"] = sanity_checks(model)
    return model.eval(), info

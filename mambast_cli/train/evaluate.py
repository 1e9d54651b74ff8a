"""Held-out evaluation of a trained model against two baselines, for MODEL.md evidence.

Owns `evaluate(...)`: content/style losses (the training losses, same loss network) of the model, of the content
image itself and of per-channel mean/std colour transfer, on centre-cropped (content, style) pairs; it writes a
markdown table. Does not print or train. The pairs are the held-out split of each folder (same hash as training)
unless `holdout_only=False`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mambast_cli.train.data import list_images, split_holdout
from mambast_cli.train.losses import LossConfig, StyleLosses
from mambast_cli.train.loop import Validator


def evaluate(weights: str | Path, content_dir: str | Path, style_dir: str | Path, *, loss_net: str = "effnet-lite0",
             loss: LossConfig | None = None, val_frac: float = 0.05, holdout_only: bool = True, size: int = 256,
             n_pairs: int = 64, device: str = "auto", markdown: str | Path | None = None) -> dict[str, Any]:
    """Validation losses of a model and of the two baselines.

    Args:
        weights: a mambast .safetensors file.
        content_dir, style_dir: image folders.
        loss_net: loss-network spec (as for training). loss: taps/weights (default: the network's defaults).
        val_frac, holdout_only: use the held-out split (as in training) or every file.
        size: centre-crop size. n_pairs: number of (content, style) pairs.
        device: "auto", "cpu" or "cuda[:N]".
        markdown: if given, write a markdown table there (and a .json beside it).
    Returns:
        {"model": {...}, "identity": {...}, "content_image": {...}, "color_transfer": {...}, "pairs": n,
         "weights": str}.
    """
    from mambast_cli.model.weights import load_model
    from mambast_cli.train.lossnet import load_loss_net

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    cs, ss = list_images(Path(content_dir)), list_images(Path(style_dir))
    if holdout_only:
        cs, ss = split_holdout(cs, val_frac)[1], split_holdout(ss, val_frac)[1]
    losses = StyleLosses(load_loss_net(loss_net).to(dev), loss)
    val = Validator(cs, ss, losses, dev, size, n_pairs)
    model = load_model(weights, device=dev)
    res: dict[str, Any] = val.run(model, amp=dev.type == "cuda")
    res["pairs"] = 0 if val.c is None else int(val.c.shape[0])
    res["weights"] = str(weights)
    res["loss"] = losses.cfg.to_dict()
    if markdown is not None:
        md = Path(markdown)
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(to_markdown(res), encoding="utf-8")
        md.with_suffix(".json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    return res


def to_markdown(res: dict[str, Any]) -> str:
    """A markdown table of an `evaluate` result (lower is better in every column)."""
    lines = [f"Held-out pairs: {res.get('pairs')}, weights `{res.get('weights')}`. Lower is better.", "",
             "| output | content loss | style loss | weighted (c·wc + s·ws) |", "|---|---|---|---|"]
    for name, label in (("model", "model"), ("identity", "model, each content as its own style (reconstruction)"),
                        ("content_image", "content image (no stylisation)"),
                        ("color_transfer", "colour transfer (mean/std)")):
        if name not in res:
            continue
        r = res[name]
        lines.append(f"| {label} | {r['content']:.4f} | {r['style']:.4f} | {r['weighted']:.3f} |")
    return "\n".join(lines) + "\n"

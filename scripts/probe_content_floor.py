"""How low can the bundled model's content loss go? Held-out content/style losses (the evaluation of MODEL.md) of:
the model (alpha 1, the default), its identity reconstruction (each content as its own style: what the decoder
rebuilds a picture from), feature blends with the identity at alpha 0.75 and 0.5 (what `--alpha` does), and the two
baselines. If the identity's content loss is far above colour transfer's, the gap of issue 4 is a floor of the
architecture + weights (8×8 patches, CNN decoder), not a matter of the content weight.

    python scripts/probe_content_floor.py --pairs 32 [--weights FILE] [--data ../shared/data/train]
CPU, 1 thread by default; prints a table and the JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None, help="default: the bundled weights")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "train"))
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from mambast_cli.model.weights import default_weights_path, load_model
    from mambast_cli.train.data import list_images, split_holdout
    from mambast_cli.train.loop import Validator
    from mambast_cli.train.losses import StyleLosses
    from mambast_cli.train.lossnet import load_loss_net

    data = Path(a.data)
    cs = split_holdout(list_images(data / "content"), 0.05)[1]
    ss = split_holdout(list_images(data / "style"), 0.05)[1]
    dev = torch.device("cpu")
    val = Validator(cs, ss, StyleLosses(load_loss_net("effnet-lite0").to(dev)), dev, 256, a.pairs)
    model = load_model(a.weights or default_weights_path(), device=dev).eval()

    def blend(alpha: float):
        def fn(c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            cst = model.encode_content(c)
            f1 = model.decode_features(cst, model.encode_style(s, grid=cst.grid, seed=0))
            f0 = model.decode_features(cst, model.encode_style(c, grid=cst.grid, seed=0))
            return model.render(torch.lerp(f0, f1, alpha), cst)
        return fn

    rows = {}
    t0 = time.perf_counter()
    with torch.no_grad():
        rows["model (alpha 1)"] = val._score(lambda c, s: model(c, s, seed=0))
        rows["identity (content as style)"] = val._score(lambda c, s: model(c, c, seed=0))
        rows["alpha 0.75"] = val._score(blend(0.75))
        rows["alpha 0.5"] = val._score(blend(0.5))
        rows["content image"] = val._score(lambda c, s: c)
        from mambast_cli.train.loop import color_transfer
        rows["colour transfer"] = val._score(color_transfer)
    print(f"{'':30} {'content':>8} {'style':>8}   ({val.c.shape[0]} held-out pairs, {time.perf_counter() - t0:.0f} s)")
    for k, r in rows.items():
        print(f"{k:30} {r['content']:8.3f} {r['style']:8.3f}")
    print(json.dumps({"pairs": int(val.c.shape[0]), "rows": rows}))


if __name__ == "__main__":
    main()

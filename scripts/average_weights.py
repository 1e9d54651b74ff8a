"""Average mambast weight files that were fine-tuned from the same start ("model soup"), e.g. two runs of a
content-weight A/B, to get a model between them without another training run.

    python scripts/average_weights.py runs/e_a/model.safetensors runs/e_b/model.safetensors -o soup.safetensors

Every file must have the same config and keys. The average is taken in fp32 and written in bf16 (the bundled format),
with the inputs' sha256 values and training metadata recorded under "extra".
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mambast_cli.errors import MambastError  # noqa: E402
from mambast_cli.model.weights import load_model, read_metadata, save_weights  # noqa: E402


def average(paths: list[str], out: str, weights: list[float] | None = None) -> str:
    """Write the (weighted) average of the models in `paths` to `out`; returns the recorded sha256."""
    w = weights or [1.0 / len(paths)] * len(paths)
    if len(w) != len(paths) or abs(sum(w) - 1.0) > 1e-6:
        raise SystemExit("--mix needs one weight per file, summing to 1")
    models = [load_model(p) for p in paths]
    cfgs = {json.dumps(m.cfg.to_dict(), sort_keys=True) for m in models}
    if len(cfgs) != 1:
        raise SystemExit("the files have different model configs")
    sds = [m.state_dict() for m in models]
    avg = {k: (sum(wi * sd[k].float() for wi, sd in zip(w, sds)) if sds[0][k].is_floating_point() else sds[0][k])
           for k in sds[0]}
    model = models[0]
    model.load_state_dict(avg)
    sources = [{"path": p, "mix": wi, "sha256": read_metadata(p).get("sha256", ""),
                "extra": json.loads(read_metadata(p).get("extra", "{}") or "{}")} for p, wi in zip(paths, w)]
    return save_weights(out, model, source=f"mambast average of {len(paths)} fine-tunes", dtype=torch.bfloat16,
                        drop_unused=True, extra={"average_of": sources})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", nargs="+", help="two or more .safetensors files with the same config")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--mix", type=float, nargs="+", default=None, help="one weight per file (default: equal)")
    args = ap.parse_args(argv)
    try:
        print(average(args.weights, args.out, args.mix))
    except MambastError as e:
        print(f"error: {e}" + (f"  (hint: {e.hint})" if e.hint else ""), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

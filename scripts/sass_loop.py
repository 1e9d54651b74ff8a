"""Read the main loop of a kernel's SASS (as `scripts/xcompile_kernels.py --sass --dump DIR` writes it): its size,
its global loads, the register copies in it that read a value loaded earlier in the same trip, and how many
instructions separate each load from the first instruction that reads its value.

Such a copy (MOV / PRMT of a load's destination) makes the warp wait for that load where the copy stands, not where
the value is used (session 10: v3's forward had 34 of them at the end of its 4-step loop). The loop is the longest
backward branch. A static reading: it says what the code asks for, not how long it waits.

    python scripts/sass_loop.py DIR/scan3_fwd_BD=64_warps=2_GB=1_SEG=0_cap=0_EMU=0.sass
"""
from __future__ import annotations

import re
import sys
from collections import Counter

_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+((?:@!?U?P\w+\s+)?[A-Z][^;]*);")
_LABEL = re.compile(r"\.L_x_(\d+):\s*\n\s*/\*([0-9a-f]+)\*/")
_REG = re.compile(r"(?<![U\w])R\d+")


def loop_report(sass: str) -> dict:
    """{"instructions", "ops" (count per opcode), "copies" (instructions copying a register loaded earlier in the
    loop)} for the longest loop of `sass`."""
    ins = [(int(a, 16), s.strip()) for a, s in _INSTR.findall(sass)]
    labels = {n: int(a, 16) for n, a in _LABEL.findall(sass)}
    lo = hi = None
    for addr, s in ins:
        m = re.search(r"BRA.*\.L_x_(\d+)", s)
        if m and labels.get(m.group(1), addr) < addr and (hi is None or addr - labels[m.group(1)] > hi - lo):
            lo, hi = labels[m.group(1)], addr
    if lo is None:
        raise SystemExit("no backward branch: no loop")
    body = [s for a, s in ins if lo <= a <= hi]
    loaded: set[str] = set()
    copies = []
    for s in body:
        op, _, rest = re.sub(r"^@!?P\w+\s+", "", s).partition(" ")
        regs = _REG.findall(rest)
        if op.startswith("LDG") and regs:
            width = 4 if ".128" in op else 2 if ".64" in op else 1
            loaded |= {f"R{int(regs[0][1:]) + k}" for k in range(width)}
        elif op.split(".")[0] in ("MOV", "PRMT") and len(regs) > 1 and any(r in loaded for r in regs[1:]):
            copies.append(s)
    ops = Counter(re.sub(r"^@!?P\w+\s+", "", s).split()[0].split(".")[0] for s in body)
    return {"instructions": len(body), "ops": dict(ops), "copies": copies, "load_to_use": _load_to_use(body)}


def _load_to_use(body: list[str]) -> list[int]:
    """For each load in the loop, the instructions until the first one that reads what it loaded (going round the
    loop; a load whose registers are all written again first is left out)."""
    parsed = []
    for s in body:
        op, _, rest = re.sub(r"^@!?P\w+\s+", "", s).partition(" ")
        regs = _REG.findall(rest)
        writes = bool(regs) and not op.startswith(("ST", "RED", "BRA")) and rest.strip().startswith("R")
        width = 4 if ".128" in op else 2 if ".64" in op or "WIDE" in op else 1
        dst = {f"R{int(regs[0][1:]) + k}" for k in range(width)} if writes else set()
        parsed.append((op, dst, set(regs[1:]) if writes else set(regs)))
    out = []
    for i, (op, dst, _) in enumerate(parsed):
        if not op.startswith("LDG"):
            continue
        live = set(dst)
        for d in range(1, len(parsed) + 1):
            _, dst2, src2 = parsed[(i + d) % len(parsed)]
            if live & src2:
                out.append(d)
                break
            live -= dst2
            if not live:
                break
    return out


def main(argv: list[str]) -> int:
    for path in argv:
        r = loop_report(open(path).read())
        o = r["ops"]
        d = sorted(r["load_to_use"]) or [0]
        print(f"{path}: loop of {r['instructions']} instructions; LDG {o.get('LDG', 0)}, MUFU {o.get('MUFU', 0)}, "
              f"FFMA {o.get('FFMA', 0)}, FMUL {o.get('FMUL', 0)}; {len(r['copies'])} copies of loaded registers; "
              f"load to first use {d[0]}-{d[-1]} instructions (median {d[len(d) // 2]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

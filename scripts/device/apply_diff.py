"""Apply a unified diff (one file, as in scripts/device/patches/) to the working tree, for machines without `patch`.

Each hunk's old lines (context and removals) must occur exactly once in the file; they are replaced by the hunk's
new lines (context and additions). Refuses anything else, leaving the file as it was.

    python3 scripts/device/apply_diff.py scripts/device/patches/v3_tail_reload.diff
"""
from __future__ import annotations

import sys
from pathlib import Path


def apply(diff: str, root: Path = Path(".")) -> Path:
    lines = diff.splitlines(keepends=True)
    target = next(ln[4:].strip() for ln in lines if ln.startswith("+++ "))
    path = root / (target[2:] if target.startswith("b/") else target)
    text = path.read_text()
    hunks, cur = [], None
    for ln in lines:
        if ln.startswith("@@"):
            cur = ([], [])
            hunks.append(cur)
        elif cur is not None and ln[:1] in (" ", "-", "+"):
            if ln[0] in " -":
                cur[0].append(ln[1:])
            if ln[0] in " +":
                cur[1].append(ln[1:])
    for old, new in hunks:
        a, b = "".join(old), "".join(new)
        if text.count(a) != 1:
            raise SystemExit(f"{path}: a hunk's old text occurs {text.count(a)} times, not once: nothing changed")
        text = text.replace(a, b)
    path.write_text(text)
    return path


if __name__ == "__main__":
    for f in sys.argv[1:]:
        print("patched", apply(Path(f).read_text()))

"""``python -m mambast_cli.ray INPUT... -s STYLE -o OUT``: ``mambast stylize`` on the Ray cluster (``--ray auto``).

Every ``mambast stylize`` option works; ``--ray ADDRESS`` picks another cluster (``ray://HOST:10001``, or ``local``
for a one-machine cluster) and ``--ray-actors N`` the size of the actor pool.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Run ``mambast stylize`` with ``--ray auto`` unless ``--ray`` is given.

    Args:
        argv: arguments after the program name (default: ``sys.argv[1:]``).
    """
    from mambast_cli.cli import build_app

    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--ray" or a.startswith("--ray=") for a in args) and not any(a in ("-h", "--help") for a in args[:1]):
        args += ["--ray", "auto"]
    build_app()(["stylize", *args], prog_name="python -m mambast_cli.ray")


if __name__ == "__main__":
    main()

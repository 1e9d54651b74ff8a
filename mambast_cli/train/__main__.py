"""`python -m mambast_cli.train ...`: the train command on its own (what torchrun launches)."""
from __future__ import annotations

import typer

from mambast_cli.train.cli import train_command


def main() -> None:
    """Run the train command as a one-command Typer app."""
    typer.run(train_command)


if __name__ == "__main__":
    main()

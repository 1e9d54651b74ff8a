"""Training for mambast (issue 4): loss networks, losses, data, the loop, evaluation, export shards.

Only the CLI's `train` command and the lead's scripts import this package; inference never does. Heavy modules
are imported by the caller (`from mambast_cli.train.loop import train`), so importing the package is cheap.
"""

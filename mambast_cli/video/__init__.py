"""`mambast video`: stylise videos frame by frame with one style, keeping timing, audio and subtitles.

Owns the video command's job (run.py), its multi-device runner (multi.py, ``--devices``), PyAV media I/O (io.py),
temporal smoothing and its measurement (stability.py) and the Typer command function (cli.py, registered by
mambast_cli/cli.py). Importing this package imports neither torch nor av: they are loaded inside the functions that
need them.
"""
from mambast_cli.video.run import ItemResult, VideoJob, VideoOptions, VideoReport, plan_jobs, run_videos

__all__ = ["ItemResult", "VideoJob", "VideoOptions", "VideoReport", "plan_jobs", "run_videos"]

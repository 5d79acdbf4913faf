"""How a training stage reaches its machines: a local subprocess, a Kubernetes Job, or Slurm.

Each launcher starts `python -m training.<stage> --config ... [overrides]`, streams the job's
log into the caller's log (the Airflow task log), waits, and raises with the job's error when
it fails. A retried stage simply runs again: the stage itself resumes from its checkpoint.
"""

from __future__ import annotations

import subprocess
import sys
from collections import deque
from pathlib import Path

from pipeline import REPO_ROOT


class JobFailed(RuntimeError):
    pass


def stage_command(stage: str, config: str, overrides: dict) -> list[str]:
    command = ["-m", f"training.{stage}", "--config", config]
    for key, value in overrides.items():
        if value is not None:
            command += ["--" + key.replace("_", "-"), str(value)]
    return command


class LocalLauncher:
    """`deepspeed` on this machine (the embedded default: the tiny model on the CPU), or plain python."""

    def __init__(self, num_gpus: int | None = None, use_deepspeed: bool = False, log=print):
        self.num_gpus, self.use_deepspeed, self.log = num_gpus, use_deepspeed, log

    def run(self, stage: str, config: str, overrides: dict) -> None:
        args = stage_command(stage, config, overrides)
        if self.use_deepspeed:
            launcher = [str(Path(sys.executable).parent / "deepspeed")]
            if self.num_gpus:
                launcher += ["--num_gpus", str(self.num_gpus)]
            command = launcher + ["--module"] + args[1:]
        else:
            command = [sys.executable] + args
        run_streamed(command, self.log)


def run_streamed(command: list[str], log=print, tail_lines: int = 40) -> None:
    """Run `command` in the repo, each output line to `log`; raise JobFailed with the last lines if it fails."""
    log(f"launching: {' '.join(command)}")
    tail: deque[str] = deque(maxlen=tail_lines)
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               bufsize=1)
    for line in process.stdout:
        tail.append(line.rstrip())
        log(line.rstrip())
    if process.wait() != 0:
        raise JobFailed(f"{' '.join(command[:4])} exited with {process.returncode}:\n" + "\n".join(tail))


def get_launcher(name: str, **options):
    if name == "local":
        return LocalLauncher(**options)
    raise ValueError(f"launcher: {name!r} is not available yet; use 'local' (kubernetes and slurm: issue 5)")

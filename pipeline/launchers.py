"""How a training stage reaches its machines: a local subprocess, a Kubernetes Job, or Slurm.

Each launcher starts `training.<stage> --config ... [overrides]`, streams the job's log into
the caller's log (the Airflow task log), waits, and raises JobFailed with the job's error when
it fails. Retries are safe: a job is named after the run and stage, so a retried task first
re-attaches to a job of that name that is still running instead of starting a second one, and a
stage started again resumes from its own checkpoint. A wait that is interrupted (the Airflow
task timed out or was marked failed) cancels the job, so nothing holds GPUs for a dead task.

Multi-node jobs run `torchrun` (torch.distributed.run) with c10d rendezvous on the first node,
one launcher process per node: DeepSpeed initialises from the variables torchrun sets, so
neither a hostfile nor ssh between nodes is needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from pipeline import REPO_ROOT

TEMPLATES = REPO_ROOT / "infra"
RENDEZVOUS_PORT = 29500


class JobFailed(RuntimeError):
    pass


def stage_command(stage: str, config: str, overrides: dict) -> list[str]:
    command = ["-m", f"training.{stage}", "--config", config]
    for key, value in overrides.items():
        if value is not None:
            command += ["--" + key.replace("_", "-"), str(value)]
    return command


def job_name(stage: str, run_key: str | None) -> str:
    """A DNS-1123 name (Kubernetes, Slurm) that is the same for every try of one stage of one run."""
    digest = hashlib.sha256((run_key or f"adhoc-{time.time_ns()}").encode()).hexdigest()[:10]
    return f"glyph-{stage}-{digest}"


def fill_template(text: str, values: dict, quote) -> str:
    """Replace every `{{ name }}` with quote(name, value); a name without a value is an error."""
    pattern = re.compile(r"{{\s*(\w+)\s*}}")
    if missing := set(pattern.findall(text)) - values.keys():
        raise KeyError(f"template values missing: {sorted(missing)}")
    return pattern.sub(lambda m: quote(m.group(1), values[m.group(1)]), text)


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


class LocalLauncher:
    """`deepspeed` on this machine (the embedded default: the tiny model on the CPU), or plain python."""

    def __init__(self, num_gpus: int | None = None, use_deepspeed: bool = False, log=print, run_key=None):
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


class SlurmLauncher:
    """`sbatch` the script `infra/slurm/train.sbatch`, follow its output file, fail with its state and log.

    `workdir` must be on a filesystem the compute nodes share (the script, the log and, by
    default, the repo checkout the job runs in). Settings come from the arguments or from
    GLYPH_SLURM_* variables (see docs/operations.md).
    """

    FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
             "BOOT_FAIL", "DEADLINE"}

    def __init__(self, nodes: int | None = None, gpus_per_node: int | None = None, partition: str | None = None,
                 workdir: str | None = None, python: str | None = None, sbatch_args: list[str] | None = None,
                 template: Path | None = None, log=print, run_key: str | None = None, poll_s: float = 5.0):
        env = os.environ.get
        self.nodes = int(nodes or env("GLYPH_SLURM_NODES", "1"))
        self.gpus_per_node = int(gpus_per_node if gpus_per_node is not None else env("GLYPH_SLURM_GPUS_PER_NODE", "8"))
        self.partition = partition or env("GLYPH_SLURM_PARTITION") or None
        self.workdir = Path(workdir or env("GLYPH_SLURM_DIR", str(REPO_ROOT / "out" / "slurm")))
        self.python = python or env("GLYPH_SLURM_PYTHON", sys.executable)
        self.sbatch_args = sbatch_args if sbatch_args is not None else shlex.split(env("GLYPH_SLURM_SBATCH_ARGS", ""))
        self.template = template or TEMPLATES / "slurm" / "train.sbatch"
        self.rendezvous_port = int(env("GLYPH_SLURM_RDZV_PORT", str(RENDEZVOUS_PORT)))
        self.log, self.run_key, self.poll_s = log, run_key, poll_s

    def script(self, stage: str, config: str, overrides: dict, name: str) -> str:
        options = [f"--nodes={self.nodes}", "--ntasks-per-node=1"]
        if self.gpus_per_node:
            options.append(f"--gpus-per-node={self.gpus_per_node}")
        if self.partition:
            options.append(f"--partition={self.partition}")
        directives = "\n".join(f"#SBATCH {option}" for option in options + self.sbatch_args)
        values = {"job_name": name, "log": str(self.workdir / f"{name}.log"), "directives": directives,
                  "repo": str(REPO_ROOT), "python": self.python, "procs_per_node": str(max(self.gpus_per_node, 1)),
                  "rendezvous_port": str(self.rendezvous_port),
                  "stage_args": " ".join(shlex.quote(a) for a in stage_command(stage, config, overrides))}
        raw = {"directives", "stage_args"}  # built shell-safe above; every other value is quoted
        return fill_template(self.template.read_text(), values,
                             quote=lambda name, value: value if name in raw else shlex.quote(value))

    def run(self, stage: str, config: str, overrides: dict) -> None:
        name = job_name(stage, self.run_key)
        self.workdir.mkdir(parents=True, exist_ok=True)
        log_path = self.workdir / f"{name}.log"
        job_id = self._running_job(name)
        if job_id:
            self.log(f"slurm: re-attaching to job {job_id} ({name}), still running from an earlier try")
        else:
            script = self.workdir / f"{name}.sbatch"
            script.write_text(self.script(stage, config, overrides, name))
            log_path.unlink(missing_ok=True)
            job_id = self._slurm(["sbatch", "--parsable", str(script)]).split(";")[0]
            self.log(f"slurm: submitted job {job_id} ({name}); log {log_path}")
        try:
            state, exit_code, tail = self._follow(job_id, log_path)
        except BaseException:
            subprocess.run(["scancel", job_id], capture_output=True)
            self.log(f"slurm: wait interrupted; cancelled job {job_id}")
            raise
        if state != "COMPLETED":
            raise JobFailed(f"slurm job {job_id} ({name}) {state}, exit code {exit_code}:\n" + "\n".join(tail))

    def _follow(self, job_id: str, log_path: Path) -> tuple[str, str, deque]:
        tail: deque[str] = deque(maxlen=40)
        position, state, exit_code = 0, "PENDING", ""
        while True:
            finished = state in self.FINAL
            if log_path.exists():
                with log_path.open("rb") as handle:
                    handle.seek(position)
                    for raw in handle:
                        if not raw.endswith(b"\n") and not finished:
                            break  # half-written; read it whole next time
                        position += len(raw)
                        line = raw.decode("utf-8", errors="replace").rstrip()
                        tail.append(line)
                        self.log(line)
            if finished:
                return state, exit_code, tail
            time.sleep(self.poll_s)
            state, exit_code = self._state(job_id)

    def _state(self, job_id: str) -> tuple[str, str]:
        shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
        if shown.returncode == 0:
            fields = dict(f.split("=", 1) for f in shown.stdout.split() if "=" in f)
            return fields.get("JobState", "UNKNOWN"), fields.get("ExitCode", "")
        # Gone from the controller's memory (MinJobAge): ask accounting, where there is one.
        acct = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State,ExitCode"], capture_output=True,
                              text=True)
        if acct.returncode == 0 and acct.stdout.strip():
            state, exit_code = acct.stdout.strip().splitlines()[0].split("|")
            return state.split()[0], exit_code
        raise JobFailed(f"slurm job {job_id}: neither scontrol nor sacct knows it any more")

    def _running_job(self, name: str) -> str | None:
        found = self._slurm(["squeue", "-h", "--name", name, "-o", "%i %T"]).split()
        return found[0] if len(found) >= 2 and found[1] in ("PENDING", "RUNNING", "CONFIGURING") else None

    @staticmethod
    def _slurm(command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise JobFailed(f"{command[0]} not found: the slurm launcher needs the Slurm client commands on PATH")
        if done.returncode != 0:
            raise JobFailed(f"{' '.join(command[:2])} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout.strip()


LAUNCHERS = {"local": LocalLauncher, "slurm": SlurmLauncher}


def get_launcher(name: str, **options):
    if name == "kubernetes":
        from pipeline.kubernetes_launcher import KubernetesLauncher

        return KubernetesLauncher(**options)
    if name not in LAUNCHERS:
        raise ValueError(f"launcher: {name!r} is not one of local, kubernetes, slurm")
    return LAUNCHERS[name](**options)

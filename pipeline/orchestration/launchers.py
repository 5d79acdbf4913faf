"""How a training stage reaches its machines: a local subprocess, a Kubernetes Job, or Slurm.

Each launcher starts `training.<stage> --config ... [overrides]`, streams the job's log into
the caller's log (the Airflow task log), waits, and raises JobFailed with the job's error when
it fails. Retries are safe: a job is named after the run and stage, so a retried task first
re-attaches to a job of that name that is still running instead of starting a second one, and a
stage started again resumes from its own checkpoint. A wait that is stopped (the Airflow task
timed out, was marked failed or its worker got SIGTERM) cancels the job, so nothing holds GPUs
for a dead task; a worker killed outright leaves the job to the retry, which re-attaches.

Multi-node jobs run `torchrun` (torch.distributed.run), one launcher process per node, meeting
at the first node: DeepSpeed initialises from the variables torchrun sets, so neither a
hostfile nor ssh between nodes is needed.
"""

from __future__ import annotations

import hashlib
import os
import re
import contextlib
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from pipeline import REPO_ROOT

TEMPLATES = REPO_ROOT / "infra"
RENDEZVOUS_PORT = 29500


class JobFailed(RuntimeError):
    pass


class ConfigurationFailed(JobFailed):
    """The job exited 2, our commands' code for a mistake in their configuration: a retry cannot fix it."""


class Terminated(BaseException):
    """SIGTERM arrived while waiting for a job (Airflow stops a task that way when it is marked failed)."""


@contextlib.contextmanager
def raise_on_sigterm():
    """Turn SIGTERM into Terminated for the length of a wait, so the wait's cleanup runs; then restore.

    Airflow's task runner answers SIGTERM by calling the operator's on_kill, which a @task has not,
    and is SIGKILLed soon after: without this a job would outlive its task.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated("SIGTERM while waiting for the job")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class MonitorLost(JobFailed):
    """The scheduler could not be asked about the job for a while; the job itself may be fine."""


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
        failure = ConfigurationFailed if process.returncode == 2 else JobFailed
        raise failure(f"{' '.join(command[:4])} exited with {process.returncode}:\n" + "\n".join(tail))


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
    PATIENCE = 60  # polls without an answer before the wait gives up (the job is left running)

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
            with raise_on_sigterm():
                state, exit_code, tail = self._follow(job_id, log_path)
        except MonitorLost:
            raise  # the job may be fine: a retry re-attaches to it
        except BaseException as stop:
            cancelled = subprocess.run(["scancel", job_id], capture_output=True, text=True, timeout=60)
            self.log(f"slurm: stopped waiting ({type(stop).__name__}: {stop}); cancelled job {job_id}"
                     + ("" if cancelled.returncode == 0 else f" (scancel: {cancelled.stderr.strip()})"))
            raise
        if state != "COMPLETED":
            raise JobFailed(f"slurm job {job_id} ({name}) {state}, exit code {exit_code}:\n" + "\n".join(tail))

    def _follow(self, job_id: str, log_path: Path) -> tuple[str, str, deque]:
        tail: deque[str] = deque(maxlen=40)
        position, state, exit_code, unanswered = 0, "PENDING", "", 0
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
            answer = self._state(job_id)
            if answer is None:  # slurmctld restarting or failing over: ask again, give up only after a while
                unanswered += 1
                if unanswered >= self.PATIENCE:
                    raise MonitorLost(f"slurm job {job_id}: no state from scontrol or sacct {unanswered} times "
                                      "in a row; the job was left running")
                continue
            unanswered, (state, exit_code) = 0, answer

    def _state(self, job_id: str) -> tuple[str, str] | None:
        try:
            shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                                   timeout=60)
            if shown.returncode == 0:
                fields = dict(f.split("=", 1) for f in shown.stdout.split() if "=" in f)
                return fields.get("JobState", "UNKNOWN"), fields.get("ExitCode", "")
            # Gone from the controller's memory (MinJobAge): ask accounting, where there is one.
            acct = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State,ExitCode"],
                                  capture_output=True, text=True, timeout=60)
        except (subprocess.TimeoutExpired, FileNotFoundError):
            return None
        if acct.returncode == 0 and acct.stdout.strip():
            state, exit_code = acct.stdout.strip().splitlines()[0].split("|")
            return state.split()[0], exit_code
        return None

    def _running_job(self, name: str) -> str | None:
        """A job of this name that has not ended (pending, running, completing, suspended, requeued...)."""
        for line in self._slurm(["squeue", "-h", "--name", name, "-o", "%i %T"]).splitlines():
            job_id, state = line.split()[:2]
            if state not in self.FINAL:
                return job_id
        return None

    @staticmethod
    def _slurm(command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise JobFailed(f"{command[0]} not found: the slurm launcher needs the Slurm client commands on PATH")
        except subprocess.TimeoutExpired:
            raise JobFailed(f"{command[0]} did not answer in 120 s: is slurmctld up?") from None
        if done.returncode != 0:
            raise JobFailed(f"{' '.join(command[:2])} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout.strip()


LAUNCHERS = {"local": LocalLauncher, "slurm": SlurmLauncher}


def get_launcher(name: str, **options):
    if name == "kubernetes":
        from pipeline.orchestration.kubernetes_launcher import KubernetesLauncher

        return KubernetesLauncher(**options)
    if name not in LAUNCHERS:
        raise ValueError(f"launcher: {name!r} is not one of local, kubernetes, slurm")
    return LAUNCHERS[name](**options)

"""`airflow standalone` on 127.0.0.1 for tests, driven through the public REST API (v2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.s3 import free_port

REPO = Path(__file__).resolve().parents[2]


class AirflowStandalone:
    """Scheduler, DAG processor, API server and triggerer on a fresh SQLite database in `home`."""

    def __init__(self, home: Path, env: dict[str, str] | None = None):
        self.home, self.port = home, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        venv_bin = str(Path(sys.executable).parent)
        self.env = {
            **os.environ, **(env or {}),
            "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),  # standalone starts `airflow ...` by name
            "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(self.port), "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__CORE__PARALLELISM": "4",
        }
        self.log_path = home / "standalone.log"
        self.process: subprocess.Popen | None = None
        self.token = ""

    def start(self, timeout: float = 240) -> None:
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "standalone"], cwd=REPO,
                                        env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"airflow standalone exited {self.process.returncode}:\n{self.tail()}")
            try:
                self.token = self._call("GET", "/auth/token", auth=False)["access_token"]
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(1)
        raise TimeoutError(f"the API server did not answer in {timeout} s:\n{self.tail()}")

    def stop(self, timeout: float = 60) -> list[str]:
        """SIGINT to standalone (SIGTERM would leave its components running); return what is still alive."""
        if self.process is None:
            return []
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 20
        while (left := self.group_processes()) and time.monotonic() < deadline:
            time.sleep(0.5)
        if left:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()
        return left

    def group_processes(self) -> list[str]:
        result = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(self.process.pid)], capture_output=True,
                                text=True)
        return [line.strip() for line in result.stdout.splitlines() if line.strip()]

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # The REST API

    def _call(self, method: str, path: str, body: dict | None = None, auth: bool = True) -> dict:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self._call("GET", f"/api/v2/dags/{dag_id}")
            except urllib.error.HTTPError as error:
                if error.code != 404:
                    raise
            time.sleep(2)
        raise TimeoutError(f"{dag_id} was not parsed in {timeout} s:\n{self.tail()}")

    def unpause(self, dag_id: str) -> None:
        self._call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict) -> str:
        self.unpause(dag_id)
        run = self._call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        return run["dag_run_id"]

    def wait_for_new_run(self, dag_id: str, run_type: str, timeout: float = 180) -> str:
        """The id of the first run of `run_type` (scheduled, asset_triggered, manual) once one exists."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
            found = [run["dag_run_id"] for run in runs if run["run_type"] == run_type]
            if found:
                return found[0]
            time.sleep(2)
        raise TimeoutError(f"no {run_type} run of {dag_id} in {timeout} s:\n{self.tail()}")

    def task_log(self, dag_id: str, run_id: str, task_id: str, attempt: int = 1) -> str:
        return (self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
                / f"attempt={attempt}.log").read_text()

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 400) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(2)
        raise TimeoutError(f"{dag_id} {run_id} not finished in {timeout} s:\n{self.tail()}")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        found = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in found}

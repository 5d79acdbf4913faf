"""`make airflow`'s script as a person runs it: it comes up on 127.0.0.1 and Ctrl-C (SIGINT to its whole
foreground process group, as a terminal sends it) stops every process it started."""

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.s3 import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def group_alive(pgid: int) -> list[str]:
    found = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(pgid)], capture_output=True, text=True).stdout
    return [line.strip() for line in found.splitlines() if line.strip() and "<defunct>" not in line]


def test_ctrl_c_stops_everything(tmp_path):
    port = free_port()
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "home"), "AIRFLOW_PORT": str(port),
           "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
           "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}
    log = (tmp_path / "airflow.log").open("w")
    process = subprocess.Popen(["bash", "scripts/airflow.sh"], cwd=REPO, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/version", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(2)
        else:
            pytest.fail("the UI did not come up:\n" + (tmp_path / "airflow.log").read_text()[-3000:])
        import re

        started = re.search(r"process group (\d+)", (tmp_path / "airflow.log").read_text())
        groups = [process.pid] + ([int(started.group(1))] if started else [])
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C at the terminal: the script's foreground group
        deadline = time.monotonic() + 60
        while any(group_alive(g) for g in groups) and time.monotonic() < deadline:
            process.poll()  # reaps the script once it has exited
            time.sleep(1)
        left = [p for g in groups for p in group_alive(g)]
        assert left == [], f"still running 60 s after Ctrl-C: {left}"
        assert process.wait(5) == 0 and "stopped" in (tmp_path / "airflow.log").read_text()
    finally:
        for group in (process.pid,):
            if group_alive(group):
                os.killpg(group, signal.SIGKILL)
        log.close()

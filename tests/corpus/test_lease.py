"""The output lease: one writer at a time, on a local folder and on S3 (moto), with real processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline import storage
from pipeline.corpus.lease import LEASE, LeaseHeld, LeaseLost, OutputLease, current_holder

HOLDER = """
import sys, time
from pipeline.corpus.lease import OutputLease
lease = OutputLease(sys.argv[1], "run-aaaaaaaaaaaa", "render-corpus").acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture(params=["local", "s3"])
def out(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out")
    s3 = request.getfixturevalue("s3")
    s3.proxy.heal()
    return s3.uri(f"lease-{os.getpid()}-{time.monotonic_ns()}")


def _hold_in_another_process(out):
    process = subprocess.Popen([sys.executable, "-c", HOLDER, out], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_refuses_naming_the_owner_then_takes_over_after_kill_minus_nine(out):
    process = _hold_in_another_process(out)
    try:
        with pytest.raises(LeaseHeld) as caught:
            OutputLease(out, storage.new_run_id(), "render-corpus").acquire()
        message = str(caught.value)
        assert "run-aaaaaaaaaaaa (render-corpus)" in message and f"pid {process.pid}" in message
        assert "--wait-lease" in message and current_holder(out)["pid"] == process.pid
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    # Its holder is dead (a process of this host that no longer exists): taken over at once.
    with OutputLease(out, storage.new_run_id(), "render-corpus") as lease:
        assert lease.taken_over["run_id"] == "run-aaaaaaaaaaaa"
    assert not storage.get_storage(out).exists(storage.join(out, LEASE)), "released on exit"


def _foreign_lease(out, expires_in: float) -> None:
    now = time.time()
    owner = {"run_id": "run-bbbbbbbbbbbb", "command": "shard", "host": "another-host", "pid": 1, "user": "x",
             "started": now - 100, "heartbeat": now - 10, "expires": now + expires_in}
    storage.get_storage(out).write_text(storage.join(out, LEASE), json.dumps(owner))


def test_a_lease_from_another_host_holds_until_it_expires(out):
    _foreign_lease(out, expires_in=60)
    with pytest.raises(LeaseHeld, match=r"run-bbbbbbbbbbbb \(shard\) by x@another-host"):
        OutputLease(out, storage.new_run_id(), "shard").acquire()
    _foreign_lease(out, expires_in=-1)
    with OutputLease(out, storage.new_run_id(), "shard") as lease:
        assert lease.taken_over["host"] == "another-host"


def test_waiting_for_the_lease(out):
    first = OutputLease(out, storage.new_run_id(), "render-corpus").acquire()
    import threading

    threading.Timer(1.0, first.release).start()
    started = time.monotonic()
    with OutputLease(out, storage.new_run_id(), "render-corpus", wait=30):
        assert 0.9 < time.monotonic() - started < 10


def test_the_heartbeat_keeps_the_lease_and_notices_a_takeover(tmp_path):
    out = str(tmp_path / "out")
    lease = OutputLease(out, storage.new_run_id(), "render-corpus", seconds=1.2).acquire()
    try:
        time.sleep(2.5)  # two lifetimes: alive only because it was renewed
        with pytest.raises(LeaseHeld):
            OutputLease(out, storage.new_run_id(), "render-corpus").acquire()
        lease.check()
        _foreign_lease(out, expires_in=60)  # someone forced their way in
        time.sleep(1.0)
        with pytest.raises(LeaseLost, match="taken over by run run-bbbbbbbbbbbb"):
            lease.check()
    finally:
        lease.release()
    assert json.loads((tmp_path / "out" / LEASE).read_text())["run_id"] == "run-bbbbbbbbbbbb", \
        "a lost lease is not deleted on release"

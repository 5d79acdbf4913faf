"""One writer per output: a lease object with its owner, a heartbeat and an expiry.

A run that writes an output (`shard`, `render-corpus`) first creates
`{out}/.glyph-lease.json` atomically: an S3 conditional PUT (`If-None-Match: *`)
or an exclusive create (a hard link) locally. A second run finds it and refuses,
naming the owner, or waits for it if asked. The holder renews it every third of
its lifetime (a conditional replace, so a lease taken over meanwhile is noticed
as lost); on exit it deletes it. A holder killed with -9 stops renewing and its
lease expires (`GLYPH_LEASE_SECONDS`, default 120): the next run takes it over,
at once when the dead holder was a process on the same host.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import sys
import threading
import time

from pipeline import storage

LEASE = ".glyph-lease.json"
log = logging.getLogger(__name__)


class LeaseHeld(RuntimeError):
    """Another live run holds the output's lease."""


class LeaseLost(RuntimeError):
    """This run's lease expired or was taken over: another run may be writing the output."""


def lease_seconds() -> float:
    value = os.environ.get("GLYPH_LEASE_SECONDS", "120")
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 1 <= seconds <= 86400:
        raise ValueError(f"GLYPH_LEASE_SECONDS={value!r}: must be a number of seconds in [1, 86400]")
    return seconds


def describe(owner: dict) -> str:
    """A lease holder as a person reads it."""
    now = time.time()
    return (f"run {owner.get('run_id')} ({owner.get('command', '?')}) by {owner.get('user')}@{owner.get('host')} "
            f"pid {owner.get('pid')}, started {_ago(now - owner.get('started', now))} ago, last heartbeat "
            f"{_ago(now - owner.get('heartbeat', now))} ago, expires in {_ago(owner.get('expires', now) - now)}")


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(owner: dict, now: float | None = None) -> bool:
    """Expired, or held by a process of this host that no longer exists."""
    now = time.time() if now is None else now
    if owner.get("expires", 0) < now:
        return True
    return owner.get("host") == socket.gethostname() and not _process_alive(int(owner.get("pid", 0)))


def current_holder(out_uri: str) -> dict | None:
    """The live lease on out_uri, if any (an expired one does not count)."""
    found = storage.get_storage(out_uri).read_versioned(storage.join(out_uri, LEASE))
    if found is None:
        return None
    try:
        owner = json.loads(found[0])
    except ValueError:
        return None
    return None if is_stale(owner) else owner


class OutputLease:
    """`with OutputLease(out_uri, run_id, "render-corpus"):` holds the output for the block."""

    def __init__(self, out_uri: str, run_id: str, command: str, wait: float = 0.0, seconds: float | None = None):
        self.out_uri, self.run_id, self.command, self.wait = out_uri, run_id, command, wait
        self.seconds = seconds or lease_seconds()
        self.uri = storage.join(out_uri, LEASE)
        self.store = storage.get_storage(out_uri, run_id)
        self.started = time.time()
        self.version: str | None = None
        self.taken_over: dict | None = None  # the stale lease this run replaced, if any
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._made_folder = not storage.is_s3(out_uri) and not storage.LocalStorage.path(out_uri).exists()

    def _body(self) -> bytes:
        now = time.time()
        owner = {"run_id": self.run_id, "command": self.command, "host": socket.gethostname(), "pid": os.getpid(),
                 "user": _user(), "argv": sys.argv[1:8], "started": self.started, "heartbeat": now,
                 "expires": now + self.seconds}
        return json.dumps(owner, sort_keys=True).encode()

    def acquire(self) -> "OutputLease":
        deadline = time.monotonic() + self.wait
        while True:
            self.version = self.store.create_exclusive(self.uri, self._body())
            if self.version:
                break
            found = self.store.read_versioned(self.uri)
            if found is None:
                continue  # released between the two calls
            owner = _parse(found[0])
            if is_stale(owner):
                self.version = self.store.replace_if(self.uri, self._body(), found[1])
                if self.version:
                    self.taken_over = owner
                    log.warning("%s: took over the lease of %s, which is no longer alive", self.out_uri,
                                owner.get("run_id"))
                    break
                continue
            if time.monotonic() >= deadline:
                waited = f" (waited {self.wait:.0f} s)" if self.wait else ""
                raise LeaseHeld(f"{self.out_uri}: another run is writing here{waited}: {describe(owner)}. "
                                "Wait for it to finish, or pass --wait-lease SECONDS; if that run is dead "
                                "its lease expires by itself.")
            time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
        self._thread = threading.Thread(target=self._heartbeat, name="glyph-lease", daemon=True)
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        expires = time.time() + self.seconds
        while not self._stop.wait(self.seconds / 3):
            try:
                body = self._body()
                version = self.store.replace_if(self.uri, body, self.version)
                if version:
                    self.version, expires = version, json.loads(body)["expires"]
                    continue
                found = self.store.read_versioned(self.uri)
                owner = _parse(found[0]) if found else {}
                if owner.get("run_id") != self.run_id:
                    self._lost = f"taken over by {describe(owner)}" if owner else "deleted by someone else"
                    return
                self.version = found[1]  # our own write, whose answer was lost: renew from it next beat
            except storage.StorageError as err:
                log.warning("%s: could not renew the lease (will retry): %s", self.out_uri, err)
            if time.time() > expires:
                self._lost = "expired while it could not be renewed"
                return

    def check(self) -> None:
        """Raise LeaseLost if this run no longer holds the output."""
        if self._lost:
            raise LeaseLost(f"{self.out_uri}: this run's lease was {self._lost}; stopping so two runs do not "
                            "write the same output (re-run to resume)")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._lost is None and self.version is not None:
            try:
                self.store.delete_if(self.uri, self.version)
            except storage.StorageError as err:
                log.warning("%s: could not release the lease (it expires by itself): %s", self.out_uri, err)
        if self._made_folder:  # a run that wrote nothing leaves nothing, not even the folder
            try:
                storage.LocalStorage.path(self.out_uri).rmdir()
            except OSError:
                pass

    def __enter__(self) -> "OutputLease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _parse(data: bytes) -> dict:
    try:
        owner = json.loads(data)
        return owner if isinstance(owner, dict) else {}
    except ValueError:
        return {}  # unreadable: treated as expired


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())

"""Failure and retry callbacks for every DAG: one clear log line, and a JSON POST when a webhook is set.

`GLYPH_ALERT_WEBHOOK` (read when the callback runs) takes any endpoint that accepts
`{"text": ...}` JSON, a Slack or Mattermost incoming webhook for example; the other fields
(dag_id, task_id, run_id, try_number, max_tries, event, error) are there for other receivers.
A callback never raises: an alert that cannot be sent is logged and the failure stays as it was.
Standard library only: DAG files import this at parse time.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request

log = logging.getLogger("glyph.alerts")


def task_failed(context) -> None:
    _alert("failed", context)


def task_retrying(context) -> None:
    _alert("up for retry", context)


def run_failed(context) -> None:
    _alert("run failed", context)


TASK_CALLBACKS = {"on_failure_callback": task_failed, "on_retry_callback": task_retrying}


def describe(event: str, context) -> dict:
    ti, run = context.get("ti"), context.get("dag_run")
    dag_id = getattr(ti, "dag_id", None) or getattr(run, "dag_id", "?")
    run_id = getattr(ti, "run_id", None) or getattr(run, "run_id", "?")
    error = context.get("exception") or context.get("reason")
    record = {"event": event, "dag_id": dag_id, "task_id": getattr(ti, "task_id", None), "run_id": run_id,
              "try_number": getattr(ti, "try_number", None), "max_tries": getattr(ti, "max_tries", None),
              "error": f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error}
    lines = str(record["error"] or "no error recorded").strip().splitlines()
    if event == "run failed":  # the DAG's callback; ti, when given, is the task that failed the run
        where, detail = dag_id, f" (task {record['task_id']})" if record["task_id"] else ""
    else:
        where, detail = f"{dag_id}.{record['task_id']}", ""
        if record["max_tries"] is not None:
            detail = f" (try {record['try_number']} of {record['max_tries'] + 1})"
    record["text"] = f"glyph: {where} {event}{detail} in {run_id}: {_reason(lines)}"
    return record


def _reason(lines: list[str]) -> str:
    """The error's first line, and where that only introduces a job's output, the output's last line too
    (the job's own one-line `error: ...`).

    >>> _reason(["JobFailed: python -m training.pretrain exited with 2:", "step 1", "error: --data x: no such file"])
    'JobFailed: python -m training.pretrain exited with 2: error: --data x: no such file'
    >>> _reason(["ValueError: bad value"])
    'ValueError: bad value'
    """
    if not lines:
        return ""
    first = lines[0].rstrip()
    rest = [line.strip() for line in lines[1:] if line.strip()]
    return f"{first} {rest[-1]}" if first.endswith(":") and rest else first


def _alert(event: str, context) -> None:
    try:
        record = describe(event, context)
        log.error(record["text"])
        print(record["text"], flush=True)  # the task log shows stdout even where logging is reconfigured
        url = os.environ.get("GLYPH_ALERT_WEBHOOK")
        if url:
            request = urllib.request.Request(url, data=json.dumps(record).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
    except Exception as error:  # an alert must never turn into a second failure
        log.warning("glyph: could not send the %s alert: %s", event, error)

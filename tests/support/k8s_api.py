"""A scripted Kubernetes API server on 127.0.0.1 for the Kubernetes launcher's tests.

No API server or cluster can run on this machine, so this speaks the few REST calls the
launcher makes (Jobs, Services, pods, pod logs), through the real `kubernetes` client, and
plays a scripted outcome for each Job: pod 0 prints its log lines, then the Job completes or
fails. It checks every posted body with the client's own models. It is a protocol-level
stand-in, not a cluster: scheduling, images and GPUs are not simulated.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

NOW = "2026-11-22T00:00:00Z"


@dataclass
class Script:
    lines: list[str] = field(default_factory=lambda: ["rank 0: step 1", "rank 0: step 2"])
    outcome: str = "Complete"  # or "Failed"
    exit_code: int = 0
    pending_polls: int = 0  # pod listings that show pod 0 unschedulable before it runs
    drop_after: int | None = None  # the first log stream breaks off after this many lines
    no_pods: bool = False  # the Job fails before any pod is created (quota, admission)


class ScriptedKubernetes:
    def __init__(self):
        self.jobs: dict[str, dict] = {}
        self.services: set[str] = set()
        self.scripts: dict[str, Script] = {}
        self.calls: list[tuple[str, str]] = []
        self.posted: list[dict] = []
        self.served: dict[str, int] = {}  # log lines of each job's pod 0 sent so far
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server._handle(self, "GET")

            def do_POST(self):
                server._handle(self, "POST")

            def do_DELETE(self):
                server._handle(self, "DELETE")

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def kubeconfig(self, folder: Path) -> Path:
        path = folder / "kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": "test-token"}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]}))
        return path

    def seed(self, name: str, state: str, script: Script | None = None) -> None:
        """A Job left by an earlier try: 'running', 'Complete' or 'Failed'."""
        self.scripts[name] = script or Script()
        self.jobs[name] = self._job(name, {"metadata": {"name": name}}, finished=None if state == "running" else state)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()

    # The API

    def _job(self, name: str, manifest: dict, finished: str | None = None) -> dict:
        job = {**manifest, "apiVersion": "batch/v1", "kind": "Job", "status": {"active": 1}}
        job["metadata"] = {**manifest["metadata"], "namespace": "glyph", "creationTimestamp": NOW}
        if finished:
            self._finish(job, finished)
        return job

    def _finish(self, job: dict, outcome: str) -> None:
        condition = {"type": outcome, "status": "True", "lastTransitionTime": NOW}
        if outcome == "Failed":
            condition.update(reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit")
        job["status"] = {"conditions": [condition], "succeeded" if outcome == "Complete" else "failed": 1}

    def _pod(self, name: str) -> dict:
        script = self.scripts[name]
        if script.pending_polls > 0:
            script.pending_polls -= 1
            return {"metadata": {"name": f"{name}-0-x7k2p", "namespace": "glyph", "creationTimestamp": NOW,
                                 "labels": {"job-name": name, "batch.kubernetes.io/job-completion-index": "0"}},
                    "status": {"phase": "Pending", "conditions": [
                        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                         "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}}
        job = self.jobs[name]
        finished = [c["type"] for c in job["status"].get("conditions", [])]
        phase = {"Complete": "Succeeded", "Failed": "Failed"}.get(finished[0] if finished else "", "Running")
        state = {"running": {"startedAt": NOW}}
        if phase != "Running":
            code = self.scripts[name].exit_code
            state = {"terminated": {"exitCode": code, "reason": "Error" if code else "Completed"}}
        return {"metadata": {"name": f"{name}-0-x7k2p", "namespace": "glyph", "creationTimestamp": NOW,
                             "labels": {"job-name": name, "batch.kubernetes.io/job-completion-index": "0"}},
                "status": {"phase": phase, "containerStatuses": [
                    {"name": "train", "image": "x", "imageID": "", "ready": phase == "Running", "restartCount": 0,
                     "state": state}]}}

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(request.path)
        path, query = url.path, parse_qs(url.query)
        self.calls.append((method, path))
        body = None
        if method == "POST":
            body = json.loads(request.rfile.read(int(request.headers["Content-Length"])))
            kind = {"Job": "V1Job", "Service": "V1Service"}.get(body.get("kind"), "")
            if not kind or model_problems(body, kind):
                return self._send(request, 422, {"kind": "Status", "reason": "Invalid", "code": 422,
                                                 "message": str(model_problems(body, kind) if kind else body)})
        if match := re.fullmatch(r"/apis/batch/v1/namespaces/(\w+)/jobs", path):
            self._check(body, "V1Job")
            name = body["metadata"]["name"]
            if name in self.jobs:
                return self._send(request, 409, {"kind": "Status", "reason": "AlreadyExists", "code": 409})
            self.posted.append(body)
            script = self.scripts.setdefault(name, Script())
            self.jobs[name] = self._job(name, body, finished="Failed" if script.no_pods else None)
            self.jobs[name]["metadata"]["uid"] = f"uid-{name}"
            return self._send(request, 201, self.jobs[name])
        if match := re.fullmatch(r"/api/v1/namespaces/(\w+)/services", path):
            self._check(body, "V1Service")
            name = body["metadata"]["name"]
            if name in self.services:
                return self._send(request, 409, {"kind": "Status", "reason": "AlreadyExists", "code": 409})
            self.services.add(name)
            self.posted.append(body)
            return self._send(request, 201, body)
        if match := re.fullmatch(r"/apis/batch/v1/namespaces/(\w+)/jobs/([\w-]+)(/status)?", path):
            name = match.group(2)
            if name not in self.jobs:
                return self._send(request, 404, {"kind": "Status", "reason": "NotFound", "code": 404})
            if method == "DELETE":
                del self.jobs[name]
                return self._send(request, 200, {"kind": "Status", "status": "Success"})
            return self._send(request, 200, self.jobs[name])
        if re.fullmatch(r"/api/v1/namespaces/(\w+)/pods", path):
            selector = dict(s.split("=") for s in query["labelSelector"][0].split(","))
            name = selector["job-name"]
            pods = [self._pod(name)] if name in self.jobs and not self.scripts[name].no_pods else []
            return self._send(request, 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods})
        if match := re.fullmatch(r"/api/v1/namespaces/(\w+)/pods/([\w-]+)-0-x7k2p(/log)?", path):
            name = match.group(2)
            if name not in self.jobs:
                return self._send(request, 404, {"kind": "Status", "reason": "NotFound", "code": 404})
            if not match.group(3):
                return self._send(request, 200, self._pod(name))
            script, start = self.scripts[name], self.served.get(name, 0)
            end = len(script.lines)
            if script.drop_after is not None and start == 0:
                end = script.drop_after  # the connection drops; the pod runs on
            self.served[name] = end
            if end == len(script.lines) and not self.jobs[name]["status"].get("conditions"):
                self._finish(self.jobs[name], script.outcome)  # the pod ends when its log does
            return self._send(request, 200, "".join(line + "\n" for line in script.lines[start:end]),
                              content_type="text/plain")
        return self._send(request, 404, {"kind": "Status", "reason": "NotFound", "code": 404})

    @staticmethod
    def _check(body: dict, kind: str) -> None:
        problems = model_problems(body, kind)
        if problems:
            raise ValueError(f"not a valid {kind}: {problems}")

    @staticmethod
    def _send(request, status: int, payload, content_type: str = "application/json") -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)


def model_problems(document: dict, kind: str) -> list[str]:
    """What the official client's model for `kind` (V1Job, V1Service, ...) cannot represent: type
    errors and missing required fields raise there; keys it drops (unknown or misplaced) are listed."""
    from kubernetes import client

    class Response:
        data = json.dumps(document)

    api = client.ApiClient()
    try:
        back = api.sanitize_for_serialization(api.deserialize(Response(), kind))
    except (ValueError, TypeError, AttributeError) as error:
        return [f"{type(error).__name__}: {error}"]
    return sorted(_paths(document) - _paths(back))


def _paths(value, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        found = set()
        for key, item in value.items():
            if item is not None:
                found |= {f"{prefix}/{key}"} | _paths(item, f"{prefix}/{key}")
        return found
    if isinstance(value, list):
        return set().union(*(_paths(item, f"{prefix}[]") for item in value)) if value else set()
    return set()

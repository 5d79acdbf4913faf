"""A training stage as a Kubernetes Indexed Job (`infra/k8s/training-job.yaml`), through the official client.

Settings come from the arguments or GLYPH_K8S_* variables (docs/operations.md): the image
(required), namespace, nodes, GPUs per node, node selector (JSON), CPU and memory requests,
and the kubeconfig context when not running inside the cluster.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from pathlib import Path

import yaml

from pipeline.orchestration.launchers import (
    RENDEZVOUS_PORT, TEMPLATES, JobFailed, fill_template, job_name, raise_on_sigterm, stage_command,
)

INDEX_LABEL = "batch.kubernetes.io/job-completion-index"


class KubernetesLauncher:
    def __init__(self, image: str | None = None, namespace: str | None = None, nodes: int | None = None,
                 gpus_per_node: int | None = None, node_selector: dict | None = None, cpu: str | None = None,
                 memory: str | None = None, context: str | None = None, template: Path | None = None, log=print,
                 run_key: str | None = None, poll_s: float = 10.0):
        env = os.environ.get
        self.image = image or env("GLYPH_K8S_IMAGE")
        if not self.image:
            raise ValueError("kubernetes launcher: set the training image (GLYPH_K8S_IMAGE or image=)")
        self.namespace = namespace or env("GLYPH_K8S_NAMESPACE", "default")
        self.nodes = int(nodes or env("GLYPH_K8S_NODES", "1"))
        self.gpus_per_node = int(gpus_per_node if gpus_per_node is not None else env("GLYPH_K8S_GPUS_PER_NODE", "8"))
        try:
            self.node_selector = node_selector if node_selector is not None else \
                json.loads(env("GLYPH_K8S_NODE_SELECTOR", "{}"))
        except json.JSONDecodeError as error:
            raise ValueError(f"GLYPH_K8S_NODE_SELECTOR is not a JSON object: {error}") from None
        self.cpu = cpu or env("GLYPH_K8S_CPU", str(max(self.gpus_per_node, 1) * 8))
        self.memory = memory or env("GLYPH_K8S_MEMORY", f"{max(self.gpus_per_node, 1) * 100}Gi")
        self.context = context or env("GLYPH_K8S_CONTEXT") or None
        self.template = template or TEMPLATES / "k8s" / "training-job.yaml"
        self.log, self.run_key, self.poll_s = log, run_key, poll_s

    def manifests(self, stage: str, config: str, overrides: dict, name: str | None = None) -> list[dict]:
        """The Service and Job for one stage, as dicts ready for the API."""
        name = name or job_name(stage, self.run_key)
        values = {"job_name": name, "stage": stage, "image": self.image, "nodes": self.nodes,
                  "nodes_text": str(self.nodes), "gpus": self.gpus_per_node, "gpus_text": str(max(self.gpus_per_node, 1)),
                  "node_selector": self.node_selector, "cpu": self.cpu, "memory": self.memory,
                  "master_addr": f"{name}-0.{name}", "rendezvous_port": RENDEZVOUS_PORT,
                  "rendezvous_port_text": str(RENDEZVOUS_PORT), "args": stage_command(stage, config, overrides)}
        text = fill_template(self.template.read_text(), values, quote=lambda _, value: json.dumps(value))
        return list(yaml.safe_load_all(text))

    # Running

    def run(self, stage: str, config: str, overrides: dict) -> None:
        from kubernetes import client

        self._connect()
        batch, core = client.BatchV1Api(), client.CoreV1Api()
        name = job_name(stage, self.run_key)
        service, job = self.manifests(stage, config, overrides, name)
        existing = self._read_job(batch, name)
        if existing is not None and existing.metadata.deletion_timestamp:
            self.log(f"kubernetes: job {name} from an earlier try is being deleted; waiting for it to go")
            self._delete(batch, name, wait=True)
            existing = None
        if existing is not None and _finished(existing) == "Complete":
            self.log(f"kubernetes: job {name} already completed in an earlier try")
            return
        if existing is not None and _finished(existing) == "Failed":
            self.log(f"kubernetes: deleting failed job {name} from an earlier try")
            self._delete(batch, name, wait=True)
            existing = None
        if existing is None:
            created = self._create(batch.create_namespaced_job, job)
            # The Service belongs to the Job: deleting the Job (or its TTL) removes it too.
            service["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                                                       "uid": created.metadata.uid}]
            self._create(core.create_namespaced_service, service)
            self.log(f"kubernetes: created job {self.namespace}/{name} ({self.nodes} node(s), "
                     f"{self.gpus_per_node} GPU(s) each, image {self.image})")
        else:
            self.log(f"kubernetes: re-attaching to job {name}, still running from an earlier try")
        try:
            with raise_on_sigterm():
                tail = self._stream_leader_log(batch, core, name)
                state = self._wait(batch, name)
        except BaseException as stop:
            try:
                self._delete(batch, name, wait=False)
                self.log(f"kubernetes: stopped waiting ({type(stop).__name__}: {stop}); deleted job {name}")
            except Exception as error:  # never hide why the wait stopped
                self.log(f"kubernetes: stopped waiting ({type(stop).__name__}: {stop}); could not delete job "
                         f"{name}: {error}")
            raise
        if state != "Complete":
            raise JobFailed(f"kubernetes job {name} failed: {self._why(batch, core, name)}\n" + "\n".join(tail))

    def _connect(self) -> None:
        from kubernetes import config

        try:
            config.load_incluster_config()
            return
        except config.ConfigException:
            pass
        try:  # KUBECONFIG read now: the client reads it only once, when first imported
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), context=self.context)
        except (config.ConfigException, OSError) as error:
            raise JobFailed(f"kubernetes launcher: not inside a cluster and no usable kubeconfig "
                            f"(KUBECONFIG or ~/.kube/config): {error}") from None

    def _create(self, create, body: dict):
        from kubernetes.client.exceptions import ApiException

        try:
            return create(self.namespace, body)
        except ApiException as error:
            if error.status != 409:  # a Service may be left from an earlier try
                raise JobFailed(f"kubernetes: cannot create {body['kind']} {body['metadata']['name']}: "
                                f"{error.status} {error.reason}: {error.body}") from None
            return None

    def _read_job(self, batch, name: str):
        from kubernetes.client.exceptions import ApiException

        try:
            return batch.read_namespaced_job(name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _delete(self, batch, name: str, wait: bool) -> None:
        batch.delete_namespaced_job(name, self.namespace, propagation_policy="Foreground")
        while wait and self._read_job(batch, name) is not None:
            time.sleep(self.poll_s / 5)

    def _leader(self, core, name: str):
        """Pod 0 (rank 0 reports for the job): by the completion-index label, or its annotation before 1.28."""
        pods = [pod for pod in core.list_namespaced_pod(self.namespace, label_selector=f"job-name={name}").items
                if ((pod.metadata.labels or {}).get(INDEX_LABEL)
                    or (pod.metadata.annotations or {}).get(INDEX_LABEL)) == "0"]
        return max(pods, key=lambda p: p.metadata.creation_timestamp) if pods else None

    def _stream_leader_log(self, batch, core, name: str) -> deque:
        """Follow pod 0's log until it ends, reconnecting if the stream drops; return its last lines.

        Returns early, with no log, when the Job ends before pod 0 ever runs (quota, admission,
        another index failing).
        """
        tail: deque[str] = deque(maxlen=40)
        told, followed_at = set(), None
        while True:
            pod = self._leader(core, name)
            phase = pod.status.phase if pod is not None else None
            if phase in ("Running", "Succeeded", "Failed"):
                since = None if followed_at is None else max(1, int(time.monotonic() - followed_at) + 1)
                followed_at = time.monotonic()
                self._follow_log(core, pod.metadata.name, since, tail)
                if phase != "Running" or self._pod_ended(core, pod.metadata.name):
                    return tail
                self.log(f"kubernetes: log stream of {pod.metadata.name} dropped; following again")
                continue
            if _finished(batch.read_namespaced_job_status(name, self.namespace)) is not None:
                return tail
            if pod is not None and phase == "Pending":
                for condition in pod.status.conditions or []:  # say once why it waits; an autoscaler may help
                    if condition.type == "PodScheduled" and condition.status == "False" and condition.message \
                            and condition.message not in told:
                        told.add(condition.message)
                        self.log(f"kubernetes: pod {pod.metadata.name} waits: {condition.reason}: {condition.message}")
                for status in pod.status.container_statuses or []:
                    waiting = status.state.waiting
                    if waiting and waiting.reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                                                      "CreateContainerConfigError"):
                        raise JobFailed(f"kubernetes: pod {pod.metadata.name} cannot start: {waiting.reason}: "
                                        f"{waiting.message}")
            time.sleep(self.poll_s)

    def _follow_log(self, core, pod: str, since_seconds: int | None, tail: deque) -> None:
        options = {"since_seconds": since_seconds} if since_seconds else {}
        stream = core.read_namespaced_pod_log(pod, self.namespace, follow=True, _preload_content=False, **options)
        pending = b""
        for chunk in stream.stream():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                text = line.decode("utf-8", errors="replace")
                tail.append(text)
                self.log(text)
        if pending:
            tail.append(pending.decode("utf-8", errors="replace"))
            self.log(tail[-1])

    def _pod_ended(self, core, pod: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            return core.read_namespaced_pod(pod, self.namespace).status.phase in ("Succeeded", "Failed")
        except ApiException as error:
            if error.status == 404:
                return True
            raise

    def _wait(self, batch, name: str) -> str:
        while (state := _finished(batch.read_namespaced_job_status(name, self.namespace))) is None:
            time.sleep(self.poll_s)
        return state

    def _why(self, batch, core, name: str) -> str:
        job = batch.read_namespaced_job_status(name, self.namespace)
        reasons = [f"{c.reason}: {c.message}" for c in job.status.conditions or [] if c.type == "Failed"]
        for pod in core.list_namespaced_pod(self.namespace, label_selector=f"job-name={name}").items:
            for status in pod.status.container_statuses or []:
                ended = status.state.terminated
                if ended and ended.exit_code:
                    reasons.append(f"pod {pod.metadata.name}: exit {ended.exit_code} ({ended.reason})")
        return "; ".join(reasons) or "no reason given"


def _finished(job) -> str | None:
    for condition in job.status.conditions or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return condition.type
    return None

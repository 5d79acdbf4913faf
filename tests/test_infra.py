"""The Kubernetes Dask manifests: well-formed, wired to each other, runnable commands."""

import shutil
import sys
from pathlib import Path

import yaml

INFRA = Path(__file__).resolve().parent.parent / "infra"


def test_dask_cluster_manifest_is_consistent():
    docs = list(yaml.safe_load_all((INFRA / "k8s" / "dask-cluster.yaml").read_text()))
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    scheduler = by_name[("Deployment", "glyph-dask-scheduler")]["spec"]["template"]["spec"]["containers"][0]
    worker_spec = by_name[("Deployment", "glyph-dask-worker")]["spec"]
    worker = worker_spec["template"]["spec"]["containers"][0]
    service = by_name[("Service", "glyph-dask-scheduler")]
    assert scheduler["command"][:2] == ["dask", "scheduler"] and worker["command"][:2] == ["dask", "worker"]
    port = int(scheduler["command"][scheduler["command"].index("--port") + 1])
    assert worker["command"][2] == f"tcp://{service['metadata']['name']}:{port}"
    assert {p["port"] for p in service["spec"]["ports"]} == {port, 8787}
    assert service["spec"]["selector"] == by_name[("Deployment", "glyph-dask-scheduler")]["spec"]["selector"][
        "matchLabels"]
    assert worker_spec["selector"]["matchLabels"] == worker_spec["template"]["metadata"]["labels"]
    env_sources = {next(iter(e)) : e[next(iter(e))]["name"] for e in worker["envFrom"]}
    assert env_sources == {"secretRef": "glyph-s3", "configMapRef": "glyph-s3-endpoint"}
    config = by_name[("ConfigMap", "glyph-s3-endpoint")]["data"]
    assert "AWS_ENDPOINT_URL" in config


def test_dask_commands_exist_in_the_environment():
    assert shutil.which("dask", path=str(Path(sys.executable).parent)), "the dask CLI the manifests run"

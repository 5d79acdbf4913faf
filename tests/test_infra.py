"""The Kubernetes Dask manifests: well-formed, wired to each other, runnable commands."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
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


REPO = INFRA.parent
SECRET_WORDS = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|FERNET|JWT|API_KEY", re.I)


def dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (INFRA / "docker" / name).read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def pyproject() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())


def code_env_names() -> set[str]:
    names = set()
    for folder in ("pipeline", "training", "dags"):
        for path in (REPO / folder).rglob("*.py"):
            names |= set(re.findall(r"\b(GLYPH_[A-Z0-9_]*[A-Z0-9])\b", path.read_text()))
    return names


@pytest.mark.parametrize("name", ["pipeline.Dockerfile", "train.Dockerfile"])
def test_dockerfiles_copy_what_exists_and_pin_their_bases(name):
    steps = dockerfile(name)
    for instruction, args in steps:
        if instruction == "FROM":
            image = args.split()[0]
            assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned base {image}"
        if instruction == "COPY" and "--from=" not in args:
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            for source in sources:
                assert (REPO / source).exists(), f"{name}: COPY {source} is not in the repo"
    runs = " ".join(args for instruction, args in steps if instruction == "RUN")
    torch_pin = next(d for d in pyproject()["project"]["dependencies"] if d.startswith("torch"))
    assert f'"{torch_pin}"' in runs, f"{name}: torch pinned as in pyproject ({torch_pin})"


def test_pipeline_image_has_what_the_renderer_and_evaluator_need():
    runs = " ".join(args for instruction, args in dockerfile("pipeline.Dockerfile") if instruction == "RUN")
    setup = (REPO / "scripts" / "setup.sh").read_text()
    setup_packages = re.search(r"APT_PACKAGES=\((.*?)\)", setup, re.S).group(1).split()
    for package in ("poppler-utils", "tesseract-ocr", "tesseract-ocr-eng", "fonts-noto-core", "fonts-noto-cjk",
                    "fonts-noto-color-emoji"):
        assert package in setup_packages and package in runs
    base = next(args for instruction, args in dockerfile("pipeline.Dockerfile") if instruction == "FROM")
    helm = yaml.safe_load((INFRA / "helm" / "airflow-values.yaml").read_text())
    from importlib.metadata import version

    airflow = base.split(":")[1].split("-")[0]
    assert airflow == helm["airflowVersion"] == version("apache-airflow"), "one Airflow version everywhere"
    assert f'"apache-airflow=={airflow}"' in " ".join(a for i, a in dockerfile("pipeline.Dockerfile") if i == "RUN")


def test_training_image_runs_what_the_job_and_sbatch_templates_call():
    job = (INFRA / "k8s" / "training-job.yaml").read_text()
    assert 'command: ["torchrun"]' in job
    assert shutil.which("torchrun", path=str(Path(sys.executable).parent)), "torchrun comes with torch"
    assert "-m torch.distributed.run" in (INFRA / "slurm" / "train.sbatch").read_text()
    workdir = next(a for i, a in dockerfile("train.Dockerfile") if i == "WORKDIR")
    copied = {a.split()[0] for i, a in dockerfile("train.Dockerfile") if i == "COPY" and "--from" not in a}
    assert {"configs", "training", "pipeline"} <= copied and workdir == "/opt/glyph", \
        "the Job's relative --config paths resolve in the image's working directory"


def compose() -> dict:
    return yaml.safe_load((INFRA / "compose" / "docker-compose.yaml").read_text())


def airflow_subcommands() -> set[str]:
    result = subprocess.run([str(Path(sys.executable).parent / "airflow"), "--help"], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "AIRFLOW_HOME": tempfile.mkdtemp()})
    return set(re.findall(r"^      ([a-z][a-z-]+)\s", result.stdout, re.M))


def test_compose_stack_builds_from_the_repo_and_runs_real_commands():
    services = compose()["services"]
    assert {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
            "dask-scheduler", "dask-worker", "minio", "postgres"} <= set(services)
    known = airflow_subcommands()
    for name, service in services.items():
        if "build" in service:
            assert (INFRA / "compose" / service["build"]["context"] / service["build"]["dockerfile"]).exists(), name
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned {image}"
        if name.startswith("airflow-"):
            assert service["command"][0] in known, f"{name}: `airflow {service['command'][0]}` does not exist"
        if name.startswith("dask-"):
            assert service["entrypoint"] == ["dask"] and service["command"][0] in ("scheduler", "worker")
    for volume in services["minio-init"]["volumes"]:
        assert (INFRA / "compose" / volume.split(":")[0]).exists()
    assert "/seed/sample.jsonl" in " ".join(services["minio-init"]["command"])
    assert services["dask-worker"]["command"][1] == "tcp://dask-scheduler:8786"
    assert services["airflow-scheduler"]["environment"]["GLYPH_DASK_SCHEDULER"] == "tcp://dask-scheduler:8786"


def test_no_secret_is_written_in_plain_text():
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_WORDS.search(key) or "://" in str(value) and "@" in str(value):
                assert re.search(r"\$\{\w+:?[?-]", str(value)), f"compose {name}: {key} is not from .env"
    for line in (INFRA / "compose" / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            assert value in ("", "change-me") or value.startswith("change-me"), f".env.example gives {key} a value"
    for path in INFRA.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not re.search(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY", text), path
    for path in (INFRA / "k8s").glob("*.yaml"):
        for document in yaml.safe_load_all(re.sub(r"{{\s*\w+\s*}}", '"x"', path.read_text())):
            for env in _container_env(document):
                if SECRET_WORDS.search(env["name"]):
                    assert "valueFrom" in env, f"{path.name}: {env['name']} must come from a Secret"
    helm = yaml.safe_load((INFRA / "helm" / "airflow-values.yaml").read_text())
    assert not [e for e in helm["env"] if SECRET_WORDS.search(e["name"])], "secrets come from extraEnvFrom"
    assert ".env" in (REPO / ".gitignore").read_text().split("infra/compose/")[1].split()[0]


def _container_env(document: dict) -> list[dict]:
    spec = (document.get("spec") or {}).get("template", {}).get("spec", {})
    return [env for container in spec.get("containers", []) for env in container.get("env", [])]


def test_environment_variables_match_what_the_code_reads():
    read = code_env_names()
    set_in_infra = set()
    for key in compose()["x-airflow"]["environment"]:
        set_in_infra.add(key)
    helm = yaml.safe_load((INFRA / "helm" / "airflow-values.yaml").read_text())
    set_in_infra |= {e["name"] for e in helm["env"]}
    glyph = {name for name in set_in_infra if name.startswith("GLYPH_")}
    assert glyph and glyph <= read, f"set in infra but read by nothing: {sorted(glyph - read)}"
    documented = set(re.findall(r"`(GLYPH_[A-Z0-9_]+)`", (REPO / "docs" / "operations.md").read_text()))
    assert read <= documented, f"read by the code, missing from docs/operations.md: {sorted(read - documented)}"
    assert documented <= read, f"documented but read by nothing: {sorted(documented - read)}"


def test_secret_and_config_names_agree_across_manifests():
    helm = yaml.safe_load((INFRA / "helm" / "airflow-values.yaml").read_text())
    helm_sources = yaml.safe_load(helm["extraEnvFrom"])
    names = {next(iter(s.values()))["name"] for s in helm_sources}
    assert {"glyph-s3", "glyph-s3-endpoint"} <= names
    job = yaml.safe_load_all(re.sub(r"{{\s*\w+\s*}}", '"x"', (INFRA / "k8s" / "training-job.yaml").read_text()))
    job_sources = [s for d in job if d["kind"] == "Job"
                   for s in d["spec"]["template"]["spec"]["containers"][0]["envFrom"]]
    assert {next(iter(s.values()))["name"] for s in job_sources} == {"glyph-s3", "glyph-s3-endpoint"}
    rbac = list(yaml.safe_load_all((INFRA / "k8s" / "training-rbac.yaml").read_text()))
    binding = next(d for d in rbac if d["kind"] == "RoleBinding")
    assert binding["subjects"][0]["name"] == helm["workers"]["serviceAccount"]["name"]
    assert binding["subjects"][0]["namespace"] == next(e["value"] for e in helm["env"]
                                                       if e["name"] == "GLYPH_K8S_NAMESPACE")
    assert helm["images"]["airflow"]["repository"].endswith("/glyph-pipeline")
    assert next(e["value"] for e in helm["env"] if e["name"] == "GLYPH_K8S_IMAGE").split("/")[-1].startswith(
        "glyph-train:")


def test_rbac_allows_every_call_the_kubernetes_launcher_makes():
    calls = set(re.findall(r"\.(create|read|delete|list)_namespaced_(job|service|pod)(_log|_status)?\b",
                           (REPO / "pipeline" / "orchestration" / "kubernetes_launcher.py").read_text()))
    assert {("create", "job", ""), ("create", "service", ""), ("read", "pod", "_log")} <= calls, calls
    verbs = {"create": "create", "read": "get", "delete": "delete", "list": "list"}
    plural = {"job": "jobs", "service": "services", "pod": "pods"}
    rules = [r for d in yaml.safe_load_all((INFRA / "k8s" / "training-rbac.yaml").read_text()) if d["kind"] == "Role"
             for r in d["rules"]]
    for action, kind, sub in calls:
        resource = plural[kind] + ("/" + sub[1:] if sub else "")
        assert any(resource in r["resources"] and verbs[action] in r["verbs"] for r in rules), (action, resource)


def test_helm_training_settings_name_configs_that_exist():
    helm = {e["name"]: e["value"] for e in yaml.safe_load((INFRA / "helm" / "airflow-values.yaml").read_text())["env"]}
    for stage in ("pretrain", "sft", "rl"):
        assert (REPO / helm["GLYPH_TRAIN_CONFIG"].format(stage=stage)).exists(), stage
    assert helm["GLYPH_TRAIN_LAUNCHER"] in ("local", "kubernetes", "slurm")


def test_every_kubernetes_manifest_is_a_complete_valid_object():
    from tests.support.k8s_api import model_problems

    kinds = {"Deployment": "V1Deployment", "Service": "V1Service", "ConfigMap": "V1ConfigMap", "Job": "V1Job",
             "Role": "V1Role", "RoleBinding": "V1RoleBinding"}
    checked = 0
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        text = re.sub(r"{{\s*(\w+)\s*}}", lambda m: "1" if m.group(1) in ("nodes", "gpus", "rendezvous_port")
                      else '"x"', path.read_text())
        for document in yaml.safe_load_all(text):
            if document["metadata"]["name"] == "x":  # the training Job template's name placeholder
                document["metadata"]["name"] = "glyph-job"
            if document["kind"] == "Job":
                document["spec"]["template"]["spec"]["nodeSelector"] = {}
                document["spec"]["template"]["spec"]["containers"][0]["args"] = ["-m", "training.pretrain"]
            assert model_problems(document, kinds[document["kind"]]) == [], (path.name, document["kind"])
            checked += 1
    assert checked == 8  # dask: 2 Deployments, Service, ConfigMap; training: Service, Job; RBAC: Role, RoleBinding

"""Training launchers: Slurm for real (a one-node cluster started here); Kubernetes manifests checked
with the official client's models, and its job handling through the real client against a scripted
API server (no Kubernetes API server can run on this machine)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.orchestration.launchers import JobFailed, SlurmLauncher, fill_template, get_launcher, job_name
from tests.support import slurm as slurm_support
from tests.support.s3 import free_port

REPO = Path(__file__).resolve().parents[2]


def test_job_names_are_stable_per_run_and_stage_and_valid_dns():
    name = job_name("pretrain", "glyph_train/manual__2026-11-22T23:50:46+00:00/pretrain")
    assert name == job_name("pretrain", "glyph_train/manual__2026-11-22T23:50:46+00:00/pretrain")
    assert name != job_name("pretrain", "glyph_train/other/pretrain")
    assert len(name) <= 63 and name.replace("-", "").isalnum() and name.islower()


def test_template_placeholders_must_all_be_filled():
    with pytest.raises(KeyError, match="image"):
        fill_template("a: {{ job_name }}\nb: {{ image }}\n", {"job_name": "x"}, quote=lambda n, v: v)


def test_unknown_launcher_is_a_clear_error():
    with pytest.raises(ValueError, match="local, kubernetes, slurm"):
        get_launcher("ssh")


# Kubernetes


def deserialize(document: dict, kind: str):
    from kubernetes import client

    class Response:
        data = json.dumps(document)

    return client.ApiClient().deserialize(Response(), kind)


def test_kubernetes_job_manifest_is_a_valid_indexed_job(monkeypatch):
    from pipeline.orchestration.kubernetes_launcher import KubernetesLauncher

    monkeypatch.setenv("GLYPH_K8S_NODE_SELECTOR", '{"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}')
    launcher = KubernetesLauncher(image="registry.example/glyph-train:1", nodes=4, gpus_per_node=8,
                                  namespace="ml", run_key="glyph_train/run1/pretrain")
    tricky = 's3://bucket/models/a: "b" {c}'  # YAML- and template-hostile characters survive intact
    service_doc, job_doc = launcher.manifests("pretrain", "configs/train/pretrain-glm41v-9b.yaml",
                                              {"model": tricky, "max_steps": 100, "data": None})
    from tests.support.k8s_api import model_problems

    assert model_problems(service_doc, "V1Service") == [] and model_problems(job_doc, "V1Job") == []
    service, job = deserialize(service_doc, "V1Service"), deserialize(job_doc, "V1Job")
    name = job.metadata.name
    assert name == job_name("pretrain", "glyph_train/run1/pretrain") == service.metadata.name
    assert job.spec.completion_mode == "Indexed" and job.spec.completions == job.spec.parallelism == 4
    assert job.spec.backoff_limit == 0, "retries belong to Airflow, where the stage resumes from its checkpoint"
    pod = job.spec.template.spec
    assert pod.subdomain == service.metadata.name and service.spec.cluster_ip == "None"
    assert service.spec.selector.items() <= job.spec.template.metadata.labels.items()
    assert pod.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    [container] = pod.containers
    assert container.image == "registry.example/glyph-train:1" and container.command == ["torchrun"]
    assert container.args == ["-m", "training.pretrain", "--config", "configs/train/pretrain-glm41v-9b.yaml",
                              "--model", tricky, "--max-steps", "100"]
    assert container.resources.limits["nvidia.com/gpu"] == "8"
    env = {e.name: e for e in container.env}
    assert env["PET_NNODES"].value == "4" and env["PET_NPROC_PER_NODE"].value == "8"
    assert env["PET_MASTER_ADDR"].value == f"{name}-0.{name}"
    assert "job-completion-index" in env["PET_NODE_RANK"].value_from.field_ref.field_path
    assert {(s.secret_ref or s.config_map_ref).name for s in container.env_from} == {"glyph-s3", "glyph-s3-endpoint"}
    assert (REPO / "configs/train/pretrain-glm41v-9b.yaml").exists()


def test_model_check_finds_misplaced_fields():
    from tests.support.k8s_api import model_problems

    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"},
           "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i", "gpus": 8}]}},
                    "backoffLimit": 0, "nodeSelector": {"a": "b"}}}
    assert model_problems(job, "V1Job") == ["/spec/nodeSelector", "/spec/nodeSelector/a",
                                            "/spec/template/spec/containers[]/gpus"]


def test_kubernetes_launcher_needs_an_image(monkeypatch):
    monkeypatch.delenv("GLYPH_K8S_IMAGE", raising=False)
    with pytest.raises(ValueError, match="GLYPH_K8S_IMAGE"):
        get_launcher("kubernetes")
    monkeypatch.setenv("GLYPH_K8S_IMAGE", "x")
    monkeypatch.setenv("GLYPH_K8S_NODE_SELECTOR", "gpu=h100")
    with pytest.raises(ValueError, match="not a JSON object"):
        get_launcher("kubernetes")


@pytest.fixture
def k8s(tmp_path, monkeypatch):
    from tests.support.k8s_api import ScriptedKubernetes

    server = ScriptedKubernetes()
    monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig(tmp_path)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield server
    server.close()


def k8s_launcher(lines, key="glyph_train/run1/pretrain", log=None):
    from pipeline.orchestration.kubernetes_launcher import KubernetesLauncher

    return KubernetesLauncher(image="glyph-train:0.1.0", namespace="glyph", gpus_per_node=8, run_key=key,
                              log=log or lines.append, poll_s=0.05)


STAGE = ("pretrain", "configs/train/pretrain-glm41v-9b.yaml", {"model": "s3://m/base", "max_steps": 10})


def test_kubernetes_stage_creates_the_job_and_streams_pod_zeros_log(k8s):
    lines: list[str] = []
    k8s_launcher(lines).run(*STAGE)
    name = job_name("pretrain", "glyph_train/run1/pretrain")
    assert [body["kind"] for body in k8s.posted] == ["Job", "Service"]
    assert k8s.posted[0]["metadata"]["name"] == name
    assert k8s.posted[1]["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": f"uid-{name}"}], "removed with its Job"
    assert lines[0].startswith(f"kubernetes: created job glyph/{name} (1 node(s), 8 GPU(s) each")
    assert lines[1:] == ["rank 0: step 1", "rank 0: step 2"]


def test_an_unschedulable_pod_is_reported_once_while_the_stage_waits(k8s):
    from tests.support.k8s_api import Script

    k8s.scripts[job_name("pretrain", "glyph_train/run1/pretrain")] = Script(pending_polls=3)
    lines: list[str] = []
    k8s_launcher(lines).run(*STAGE)
    waits = [line for line in lines if " waits: " in line]
    assert waits == [f"kubernetes: pod {job_name('pretrain', 'glyph_train/run1/pretrain')}-0-x7k2p waits: "
                     "Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."]
    assert lines[-1] == "rank 0: step 2"


def test_a_dropped_log_stream_is_followed_again(k8s):
    from tests.support.k8s_api import Script

    name = job_name("pretrain", "glyph_train/run1/pretrain")
    k8s.scripts[name] = Script(lines=[f"step {i}" for i in range(1, 6)], drop_after=2)
    lines: list[str] = []
    k8s_launcher(lines).run(*STAGE)
    assert lines[1:] == ["step 1", "step 2", f"kubernetes: log stream of {name}-0-x7k2p dropped; following again",
                         "step 3", "step 4", "step 5"]


def test_a_job_that_fails_before_any_pod_runs_does_not_hang(k8s):
    from tests.support.k8s_api import Script

    k8s.scripts[job_name("pretrain", "glyph_train/run1/pretrain")] = Script(no_pods=True, outcome="Failed")
    with pytest.raises(JobFailed, match="BackoffLimitExceeded"):
        k8s_launcher([]).run(*STAGE)


def test_kubernetes_job_failure_fails_with_reason_exit_code_and_log(k8s):
    from tests.support.k8s_api import Script

    name = job_name("pretrain", "glyph_train/run1/pretrain")
    k8s.scripts[name] = Script(lines=["loading s3://m/base", "OSError: s3://m/base has no config.json"],
                               outcome="Failed", exit_code=1)
    with pytest.raises(JobFailed) as failed:
        k8s_launcher([]).run(*STAGE)
    message = str(failed.value)
    assert "BackoffLimitExceeded" in message and "exit 1 (Error)" in message
    assert message.endswith("OSError: s3://m/base has no config.json")


@pytest.mark.parametrize("earlier, creates, first_line", [
    ("running", False, "kubernetes: re-attaching to job {name}, still running from an earlier try"),
    ("Complete", False, "kubernetes: job {name} already completed in an earlier try"),
    ("Failed", True, "kubernetes: deleting failed job {name} from an earlier try"),
])
def test_a_retried_kubernetes_stage_reuses_or_replaces_the_earlier_job(k8s, earlier, creates, first_line):
    name = job_name("pretrain", "glyph_train/run1/pretrain")
    k8s.seed(name, earlier)
    lines: list[str] = []
    k8s_launcher(lines).run(*STAGE)
    assert lines[0] == first_line.format(name=name)
    assert any(b["kind"] == "Job" for b in k8s.posted) == creates
    assert (("DELETE", f"/apis/batch/v1/namespaces/glyph/jobs/{name}") in k8s.calls) == (earlier == "Failed")


def test_an_interrupted_kubernetes_wait_deletes_the_job(k8s):
    class TaskKilled(Exception):
        pass

    def log(line):
        if line == "rank 0: step 1":
            raise TaskKilled

    with pytest.raises(TaskKilled):
        k8s_launcher([], log=log).run(*STAGE)
    name = job_name("pretrain", "glyph_train/run1/pretrain")
    assert k8s.calls[-1] == ("DELETE", f"/apis/batch/v1/namespaces/glyph/jobs/{name}")


# Slurm, for real


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = slurm_support.missing()
    if reason:
        pytest.skip(reason)
    cluster = slurm_support.SlurmCluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    saved = {key: os.environ.get(key) for key in cluster.env}
    os.environ.update(cluster.env)
    yield cluster
    cluster.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, sample_docs):
    from pipeline.cli import main

    root = tmp_path_factory.mktemp("slurm-train")
    assert main(["make-tiny-model", str(root / "model")]) == 0
    corpus = root / "c.jsonl"
    corpus.write_text(json.dumps({"id": "s", "text": sample_docs["shakespeare-sonnets"][:2500]}) + "\n")
    assert main(["render", "--shard", str(corpus), "--out", str(root / "pages")]) == 0
    return root


@pytest.fixture
def launcher_env(monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("GLYPH_SLURM_RDZV_PORT", str(free_port()))


def slurm_launcher(tmp_path, key, lines):
    return SlurmLauncher(gpus_per_node=0, workdir=str(tmp_path / "slurm"), log=lines.append, run_key=key, poll_s=0.5)


def overrides(tiny, out, **more):
    return {"model": str(tiny / "model"), "data": str(tiny / "pages"), "output_dir": str(out), "max_steps": 2, **more}


def test_a_stage_runs_as_a_slurm_job_with_its_log_streamed(slurm, tiny, tmp_path, launcher_env):
    lines: list[str] = []
    slurm_launcher(tmp_path, "run-ok/pretrain", lines).run("pretrain", "configs/train/pretrain.yaml",
                                                           overrides(tiny, tmp_path / "out"))
    steps = [json.loads(line)["step"] for line in (tmp_path / "out" / "metrics.jsonl").open()]
    assert steps == [1, 2]
    assert (tmp_path / "out" / "model" / "config.json").exists()
    assert lines[0].startswith("slurm: submitted job ")
    assert any(line.startswith("slurm job ") and "1 node(s)" in line for line in lines), "the job's own log"


def test_a_failing_slurm_job_fails_with_its_error(slurm, tiny, tmp_path, launcher_env):
    lines: list[str] = []
    with pytest.raises(JobFailed, match="FAILED") as failed:
        slurm_launcher(tmp_path, "run-bad/pretrain", lines).run(
            "pretrain", "configs/train/pretrain.yaml", overrides(tiny, tmp_path / "out", model=str(tmp_path / "nope")))
    assert "nope" in str(failed.value), "the job's error is in the exception"


def test_a_retry_reattaches_to_the_running_job_instead_of_starting_another(slurm, tiny, tmp_path, launcher_env):
    first: list[str] = []
    launcher = slurm_launcher(tmp_path, "run-retry/pretrain", first)
    name = job_name("pretrain", "run-retry/pretrain")
    script = tmp_path / "slurm" / "earlier-try.sbatch"
    script.parent.mkdir(parents=True)
    script.write_text(launcher.script("pretrain", "configs/train/pretrain.yaml", overrides(tiny, tmp_path / "out"),
                                      name))
    earlier = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, check=True)
    job_id = earlier.stdout.strip()  # an earlier try's job, its Airflow task since lost

    launcher.run("pretrain", "configs/train/pretrain.yaml", overrides(tiny, tmp_path / "out"))
    assert first[0] == f"slurm: re-attaching to job {job_id} ({name}), still running from an earlier try"
    assert [json.loads(line)["step"] for line in (tmp_path / "out" / "metrics.jsonl").open()] == [1, 2]


def test_an_interrupted_wait_cancels_the_job(slurm, tiny, tmp_path, launcher_env):
    class TaskKilled(Exception):
        pass

    seen: list[str] = []

    def log(line):
        seen.append(line)
        if line.startswith("slurm job "):  # the job is running: now the Airflow task is killed
            raise TaskKilled

    launcher = SlurmLauncher(gpus_per_node=0, workdir=str(tmp_path / "slurm"), log=log, run_key="run-kill/x",
                             poll_s=0.5)
    with pytest.raises(TaskKilled):
        launcher.run("pretrain", "configs/train/pretrain.yaml", overrides(tiny, tmp_path / "out", max_steps=500))
    job_id = seen[0].split()[3]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
        if "JobState=CANCELLED" in state:
            break
        time.sleep(0.5)
    assert "JobState=CANCELLED" in state
    assert seen[-1] == f"slurm: stopped waiting (TaskKilled: ); cancelled job {job_id}"


SIGTERM_PROBE = """
import sys
from pipeline.orchestration.launchers import SlurmLauncher
launcher = SlurmLauncher(gpus_per_node=0, workdir=sys.argv[1], run_key="run-sigterm/x", poll_s=0.5,
                         log=lambda line: print(line, flush=True))
launcher.run("pretrain", "configs/train/pretrain.yaml", {"model": sys.argv[2], "data": sys.argv[3],
             "output_dir": sys.argv[4], "max_steps": 500})
"""


def test_sigterm_to_the_waiting_task_cancels_the_job(slurm, tiny, tmp_path, launcher_env):
    """What Airflow does to a task marked failed: SIGTERM to the task process, SIGKILL soon after."""
    process = subprocess.Popen([sys.executable, "-c", SIGTERM_PROBE, str(tmp_path / "slurm"), str(tiny / "model"),
                                str(tiny / "pages"), str(tmp_path / "out")], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=os.environ)
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip())
        if line.startswith("slurm job "):  # the job runs: stop the task
            process.send_signal(signal.SIGTERM)
    assert process.wait(60) != 0
    job_id = lines[0].split()[3]
    assert any(line.startswith("slurm: stopped waiting (Terminated: SIGTERM") and line.endswith(
        f"cancelled job {job_id}") for line in lines), lines[-5:]
    state = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    assert "JobState=CANCELLED" in state or "JobState=COMPLETING" in state


def test_a_scheduler_that_stops_answering_leaves_the_job_alone(slurm, tmp_path):
    from pipeline.orchestration.launchers import MonitorLost

    launcher = SlurmLauncher(gpus_per_node=0, workdir=str(tmp_path), log=lambda line: None, poll_s=0.01)
    launcher.PATIENCE = 3
    with pytest.raises(MonitorLost, match="left running"):
        launcher._follow("987654", tmp_path / "absent.log")  # a job id neither scontrol nor sacct knows


def test_sbatch_script_asks_for_gpus_and_passes_arguments_safely(tmp_path):
    launcher = SlurmLauncher(nodes=2, gpus_per_node=8, partition="h100", workdir=str(tmp_path),
                             sbatch_args=["--time=2-00:00:00"], run_key="k")
    text = launcher.script("sft", "configs/train/sft.yaml", {"model": "s3://b/it's here"}, "glyph-sft-x")
    assert "#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n#SBATCH --gpus-per-node=8\n#SBATCH --partition=h100\n" \
           "#SBATCH --time=2-00:00:00\n" in text
    assert "--nproc-per-node 8" in text
    script = tmp_path / "s.sh"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, "valid shell"
    argv = subprocess.run(["bash", "-c", "printf '%s\\n' " + text.split("--rdzv-id \"$SLURM_JOB_ID\" \\\n")[1]],
                          capture_output=True, text=True).stdout.splitlines()
    assert argv == ["-m", "training.sft", "--config", "configs/train/sft.yaml", "--model", "s3://b/it's here"]


def test_kubernetes_without_a_cluster_config_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(JobFailed, match="no usable kubeconfig"):
        k8s_launcher([]).run(*STAGE)

"""The DAGs with real Airflow (temporary SQLite), output to the test suite's S3 server."""

import json
import os
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
PARSE_BOUND_S = 1.0  # per DAG file, in a fresh interpreter, Airflow's own import excluded (measured: ~0.05 s)


def test_dagbag_imports_cleanly_and_lightly(airflow_env):
    probe = (
        "import sys, time; from airflow.dag_processing.dagbag import DagBag; t = time.perf_counter();"
        f"bag = DagBag({str(REPO / 'dags')!r}); took = time.perf_counter() - t;"
        "heavy = sorted(m for m in ('torch', 'boto3', 'dask', 'deepspeed', 'transformers', 'skia', 'pipeline.corpus')"
        " if m in sys.modules);"
        "import json; print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()},"
        " 'dags': sorted(bag.dag_ids), 'seconds': took, 'heavy': heavy}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                            env=os.environ)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert set(report["dags"]) == {"glyph_render", "glyph_corpus_refresh", "glyph_train", "glyph_render_search"}
    assert report["heavy"] == [], "DAG files import nothing heavy at parse time"
    assert report["seconds"] / len(list((REPO / "dags").glob("*.py"))) < PARSE_BOUND_S


def get_dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.get_dag(dag_id)


def test_glyph_render_from_params(airflow_env, s3, tmp_path, sample_docs):
    s3.proxy.heal()
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": v[:3000]}) + "\n" for k, v in sample_docs.items()))
    run = get_dag("glyph_render").test(run_conf={
        "corpus_uri": str(corpus), "output_uri": s3.uri("airflow-render"), "styles": "dark=1",
        "num_shards": 2, "backend": "skia", "render_config": "", "dask_scheduler": ""})
    assert str(run.state) == "success"
    keys = {o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="airflow-render/")["Contents"]}
    assert {"airflow-render/rendered/manifest.json", "airflow-render/rendered/corpus-train-000000.tar",
            "airflow-render/input/sharding.json"} <= keys

    # Triggered again with other styles: refused (not mixed in, not retried); with overwrite, replaced.
    conf = {"corpus_uri": str(corpus), "output_uri": s3.uri("airflow-render"), "styles": "web=1", "num_shards": 2}
    again = get_dag("glyph_render").test(run_conf=conf)
    assert str(again.state) == "failed"
    states = {ti.task_id: (str(ti.state), ti.try_number) for ti in again.get_task_instances()}
    assert states["shard"][0] == "success" and states["render"] == ("failed", 1)
    replaced = get_dag("glyph_render").test(run_conf={**conf, "overwrite": True})
    assert str(replaced.state) == "success"
    manifest = json.loads(s3.client().get_object(Bucket=s3.bucket, Key="airflow-render/rendered/manifest.json")
                          ["Body"].read())
    assert set(manifest["styles"]) <= {"web", "code"} and "web" in manifest["styles"]


def test_refresh_publishes_then_exits_early_when_nothing_is_new(airflow_env, s3, tmp_path, sample_docs, monkeypatch):
    s3.proxy.heal()
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl").write_text(json.dumps({"id": "a", "text": sample_docs["shakespeare-sonnets"][:3000]}) + "\n")
    monkeypatch.setenv("GLYPH_RAW_PREFIX", str(raw))
    monkeypatch.setenv("GLYPH_DATA_ROOT", s3.uri("airflow-refresh"))
    monkeypatch.setenv("GLYPH_STYLES", "document=1")
    dag = get_dag("glyph_corpus_refresh")
    first = dag.test()
    assert str(first.state) == "success"
    states = {ti.task_id: str(ti.state) for ti in first.get_task_instances()}
    assert states["publish"] == "success"
    latest = s3.client().get_object(Bucket=s3.bucket, Key="airflow-refresh/versions/latest.json")["Body"].read()
    assert json.loads(latest)["pages"] > 0

    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = [(event.asset.name, event.extra) for event in session.query(AssetEvent).all()]
    [(name, extra)] = [e for e in events if e[0] == "glyph_corpus"]
    assert extra["dataset"] == json.loads(latest)["dataset"], "the event names the dataset glyph_train will use"
    assert extra["pages"] >= extra["units"] >= 1 and extra["compression_ratio"] > 0, "and what it holds"

    second = get_dag("glyph_corpus_refresh").test()
    states = {ti.task_id: str(ti.state) for ti in second.get_task_instances()}
    assert states["find_new"] == "success" and states["publish"] == "skipped", "nothing new: nothing published"

    (raw / "b.jsonl").write_text(json.dumps({"id": "b", "text": sample_docs["shakespeare-macbeth"][:3000]}) + "\n")
    third = get_dag("glyph_corpus_refresh").test()
    assert str(third.state) == "success"
    newest = json.loads(s3.client().get_object(Bucket=s3.bucket, Key="airflow-refresh/versions/latest.json")["Body"]
                        .read())
    assert newest["previous"] == json.loads(latest)["uri"] and newest["units"] == 1, "a version holds the delta"


def test_glyph_train_chains_the_stages(airflow_env, tmp_path, sample_docs, monkeypatch):
    from pipeline.cli import main

    monkeypatch.setenv("GLYPH_STAGE_RETRY_DELAY_S", "1")  # read when the DAG file is parsed
    assert main(["make-tiny-model", str(tmp_path / "tiny")]) == 0
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": v[:2500]}) + "\n" for k, v in sample_docs.items()))
    assert main(["render", "--shard", str(corpus), "--out", str(tmp_path / "pages")]) == 0
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    conf = {"model": str(tmp_path / "tiny"), "data": str(tmp_path / "pages"), "sft_data": "data/sample/sft.jsonl",
            "output_uri": str(tmp_path / "train"), "max_steps": 2, "launcher": "local"}
    run = get_dag("glyph_train").test(run_conf=conf)
    assert str(run.state) == "success"
    from pipeline.orchestration.orchestrate import run_folder

    for stage in ("pretrain", "sft", "rl"):
        out = tmp_path / "train" / run_folder(run.run_id) / stage
        assert (out / "model" / "config.json").exists(), stage
        assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").open()] == [1, 2], stage

    from tests.support.webhook import WebhookReceiver

    receiver = WebhookReceiver()
    monkeypatch.setenv("GLYPH_ALERT_WEBHOOK", receiver.url)
    broken = get_dag("glyph_train").test(run_conf={**conf, "model": str(tmp_path / "missing"),
                                                    "output_uri": str(tmp_path / "broken")})
    receiver.close()
    states = {ti.task_id: str(ti.state) for ti in broken.get_task_instances()}
    assert str(broken.state) == "failed" and states["pretrain"] == "failed"
    sent = [(b["task_id"], b["event"], b["try_number"]) for b in receiver.bodies]
    assert sent == [("pretrain", "failed", 1), ("pretrain", "run failed", 1)], \
        "a configuration error (exit code 2) is not retried"
    assert "exited with 2" in receiver.bodies[0]["error"] and "no such folder" in receiver.bodies[0]["error"], \
        "the alert carries the job's error"
    assert receiver.bodies[1]["text"].startswith("glyph: glyph_train run failed (task pretrain) in manual__")
    assert receiver.bodies[0]["text"].endswith(": no such folder"), "the alert line says why, in one line"


def test_render_search_then_render_with_its_best_config(airflow_env, s3, tmp_path):
    s3.proxy.heal()
    run = get_dag("glyph_render_search").test(run_conf={
        "validation_uri": str(REPO / "data" / "sample" / "search-validation.jsonl"),
        "output_uri": s3.uri("airflow-search"), "generations": 1, "population": 2})
    assert str(run.state) == "success"
    best = run.get_task_instance("best").xcom_pull(task_ids="best")
    assert best["config_uri"] == s3.uri("airflow-search", "best_config.json")
    assert best["evaluator"].startswith("offline-ocr") and 0 <= best["accuracy"] <= 1
    config = json.loads(s3.client().get_object(Bucket=s3.bucket, Key="airflow-search/best_config.json")["Body"].read())

    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "x", "text": "Where is the master, boson? " * 200}) + "\n")
    render = get_dag("glyph_render").test(run_conf={
        "corpus_uri": str(corpus), "output_uri": str(tmp_path / "render"), "num_shards": 1,
        "render_config": best["config_uri"]})
    assert str(render.state) == "success"
    import pipeline

    page = next(iter(pipeline.read_shards(str(tmp_path / "render" / "rendered"))))["json"]["config"]
    assert (page["dpi"], page["font-size"], page["page-size"]) == (config["dpi"], config["font-size"],
                                                                  config["page-size"])

"""Airflow running for real: `airflow standalone` on 127.0.0.1 driven through the REST API.

glyph_render triggered with a conf as from the UI; glyph_corpus_refresh run by its schedule,
its Asset event starting glyph_train on the dataset it published.
"""

import json
from pathlib import Path

import pytest

from tests.support.airflow_server import AirflowStandalone

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, sample_docs):
    from pipeline.cli import main

    root = tmp_path_factory.mktemp("standalone-inputs")
    (root / "raw").mkdir()
    (root / "raw" / "a.jsonl").write_text(json.dumps({"id": "a", "text": sample_docs["shakespeare-sonnets"][:3000]})
                                          + "\n")
    assert main(["make-tiny-model", str(root / "tiny")]) == 0
    return root


@pytest.fixture(scope="module")
def airflow_server(tmp_path_factory, s3, inputs):
    server = AirflowStandalone(tmp_path_factory.mktemp("standalone-home"), env={
        "GLYPH_RETRY_DELAY_S": "1", "GLYPH_STAGE_RETRY_DELAY_S": "1",
        "GLYPH_RAW_PREFIX": str(inputs / "raw"), "GLYPH_DATA_ROOT": s3.uri("scheduled"), "GLYPH_STYLES": "document=1",
        "GLYPH_TRAIN_MODEL": str(inputs / "tiny"), "GLYPH_TRAIN_OUTPUT_URI": str(inputs / "train"),
        "GLYPH_TRAIN_MAX_STEPS": "2", "TORCH_EXTENSIONS_DIR": str(REPO / ".cache" / "torch_extensions"),
        "GLYPH_OUTPUT_ROOTS": f"{tmp_path_factory.getbasetemp()},{s3.uri()}",
        "GLYPH_DASK_SCHEDULERS": "tcp://127.0.0.1:1"})
    server.start()
    yield server
    assert server.stop() == [], "SIGINT stops every component standalone started"


def test_render_triggered_through_the_rest_api(airflow_server, s3, tmp_path, sample_docs):
    s3.proxy.heal()
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": v[:2000]}) + "\n" for k, v in sample_docs.items()))
    dag = airflow_server.wait_for_dag("glyph_render")
    assert dag["is_paused"], "DAGs start paused: nothing runs until someone turns it on"

    run_id = airflow_server.trigger("glyph_render", {
        "corpus_uri": str(corpus), "output_uri": s3.uri("ui-render"), "styles": "web=1", "num_shards": 2})
    state = airflow_server.wait_for_run("glyph_render", run_id)
    assert state == "success", (airflow_server.task_states("glyph_render", run_id), airflow_server.tail())
    assert airflow_server.task_states("glyph_render", run_id) == {
        "shard": "success", "render": "success", "verify": "success"}

    from pipeline.corpus.verify import verify_dataset

    assert verify_dataset(s3.uri("ui-render", "rendered")) == []
    manifest = json.loads(s3.client().get_object(Bucket=s3.bucket, Key="ui-render/rendered/manifest.json")["Body"]
                          .read())
    assert manifest["units"] == len(sample_docs) and len(manifest["shards"]) == 2
    styles = set()
    for shard in manifest["shards"]:
        key = "ui-render/rendered/" + shard["shard"].removesuffix(".tar") + ".stats.json"
        stats = json.loads(s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read())
        styles |= {document["style"] for document in stats["documents"]}
    assert "web" in styles and styles <= {"web", "code"}, "the conf's style mixture reached the render task"


def test_bad_conf_is_refused_by_the_api_before_anything_runs(airflow_server):
    import urllib.error

    airflow_server.wait_for_dag("glyph_render")
    with pytest.raises(urllib.error.HTTPError) as refused:
        airflow_server.trigger("glyph_render", {"num_shards": 0, "backend": "gpu"})
    assert refused.value.code == 400
    assert "num_shards" in refused.value.read().decode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        airflow_server.trigger("glyph_render", {"styles": "document:0.5;web"})
    assert refused.value.code == 400 and "styles" in refused.value.read().decode()
    for outside in ("/etc/glyph", "relative/out", "s3://other-bucket/x"):  # outside GLYPH_OUTPUT_ROOTS
        with pytest.raises(urllib.error.HTTPError) as refused:
            airflow_server.trigger("glyph_render", {"output_uri": outside})
        assert refused.value.code == 400 and "output_uri" in refused.value.read().decode(), outside
    inside = airflow_server.env["GLYPH_OUTPUT_ROOTS"].split(",")[0]
    with pytest.raises(urllib.error.HTTPError) as refused:
        airflow_server.trigger("glyph_render", {"output_uri": f"{inside}/../../etc"})
    assert refused.value.code == 400, "no climbing out of a root"
    with pytest.raises(urllib.error.HTTPError) as refused:  # not one of GLYPH_DASK_SCHEDULERS
        airflow_server.trigger("glyph_render", {"dask_scheduler": "tcp://10.0.0.9:8786"})
    assert refused.value.code == 400 and "dask_scheduler" in refused.value.read().decode()


def test_scheduled_refresh_publishes_and_its_asset_event_starts_training(airflow_server, s3, inputs):
    from pipeline.orchestration.orchestrate import run_folder

    s3.proxy.heal()
    for dag_id in ("glyph_corpus_refresh", "glyph_train"):
        airflow_server.wait_for_dag(dag_id)
    airflow_server.unpause("glyph_train")
    airflow_server.unpause("glyph_corpus_refresh")  # no catch-up: only the latest interval runs
    refresh = airflow_server.wait_for_new_run("glyph_corpus_refresh", "scheduled")
    state = airflow_server.wait_for_run("glyph_corpus_refresh", refresh)
    assert state == "success", airflow_server.task_states("glyph_corpus_refresh", refresh)
    latest = json.loads(s3.client().get_object(Bucket=s3.bucket, Key="scheduled/versions/latest.json")["Body"].read())

    train = airflow_server.wait_for_new_run("glyph_train", "asset_triggered")
    state = airflow_server.wait_for_run("glyph_train", train)
    assert state == "success", (airflow_server.task_states("glyph_train", train), airflow_server.tail())
    assert f"--data {latest['dataset']} " in airflow_server.task_log("glyph_train", train, "pretrain"), \
        "pre-training ran on the dataset version the Asset event named"
    for stage in ("pretrain", "sft", "rl"):
        assert (inputs / "train" / run_folder(train) / stage / "model" / "config.json").exists(), stage


def test_trigger_forms_in_a_real_browser(airflow_server, tmp_path, sample_docs):
    """Chromium opens each DAG's trigger form: Trigger is enabled with the defaults; glyph_render is filled in
    (a corpus, an output, a bare style name) and triggered by a click, and the run renders what was asked."""
    from playwright.sync_api import expect

    from tests.support.browser import browser_page, open_trigger_form

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": v[:1500]}) + "\n" for k, v in sample_docs.items()))
    out = tmp_path / "browser-render"
    dags = ("glyph_render_search", "glyph_train", "glyph_corpus_refresh", "glyph_render")
    for dag_id in dags:
        airflow_server.wait_for_dag(dag_id)
    with browser_page() as page:
        for dag_id in dags:
            dialog = open_trigger_form(page, airflow_server.url, dag_id)
            # with its defaults the form can be submitted (expect waits for the form to settle)
            expect(dialog.get_by_role("button", name="Trigger")).to_be_enabled(timeout=15_000)
            page.keyboard.press("Escape")
        dialog = open_trigger_form(page, airflow_server.url, "glyph_render")
        before = {run["dag_run_id"] for run in airflow_server._call("GET", "/api/v2/dags/glyph_render/dagRuns")
                  ["dag_runs"]}
        dialog.locator("#element_corpus_uri").fill(str(corpus))
        # an unknown style, then an output outside GLYPH_OUTPUT_ROOTS: each refused, and no run starts
        for output, styles in ((out, "bogus=1"), ("/etc/glyph-render", "web")):
            dialog.locator("#element_output_uri").fill(str(output))
            dialog.locator("#element_styles").fill(styles)
            dialog.get_by_role("button", name="Trigger").click()
            toast = page.locator("[data-scope=toast][data-type=error]").first
            toast.wait_for()  # the API refused the conf (the UI says "Bad Request", not which field)
            assert "Failed to Trigger" in toast.inner_text()
            page.mouse.move(5, 500)  # a toast stays while the pointer rests on it, and it covers Trigger
            toast.wait_for(state="detached", timeout=60_000)
            runs = airflow_server._call("GET", "/api/v2/dags/glyph_render/dagRuns")["dag_runs"]
            assert {run["dag_run_id"] for run in runs} == before, f"{output} {styles}: no run"
        dialog.locator("#element_output_uri").fill(str(out))
        dialog.locator("#element_styles").fill("web")
        dialog.get_by_role("button", name="Trigger").click()
        page.wait_for_url("**/dags/glyph_render/runs/**")
    runs = airflow_server._call("GET", "/api/v2/dags/glyph_render/dagRuns")["dag_runs"]
    new = [run for run in runs if run["dag_run_id"] not in before]
    assert len(new) == 1 and new[0]["conf"]["styles"] == "web" and new[0]["conf"]["dask_scheduler"] is None
    run_id = new[0]["dag_run_id"]
    state = airflow_server.wait_for_run("glyph_render", run_id)
    assert state == "success", (airflow_server.task_states("glyph_render", run_id), airflow_server.tail())
    from pipeline.corpus.verify import verify_dataset

    assert verify_dataset(str(out / "rendered")) == []
    manifest = json.loads((out / "rendered" / "manifest.json").read_text())
    assert manifest["units"] == len(sample_docs)

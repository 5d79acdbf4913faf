"""The UI trigger path: `airflow standalone` on 127.0.0.1, glyph_render triggered through the REST API."""

import json

import pytest

from tests.support.airflow_server import AirflowStandalone


@pytest.fixture(scope="module")
def airflow_server(tmp_path_factory, s3):
    server = AirflowStandalone(tmp_path_factory.mktemp("standalone-home"), env={"GLYPH_RETRY_DELAY_S": "1"})
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

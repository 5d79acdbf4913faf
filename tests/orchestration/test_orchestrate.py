"""What the DAG tasks call, without Airflow: rendering through `pipeline render-corpus` in its own process."""

import json

import pytest

from pipeline.orchestration import orchestrate
from pipeline.orchestration.launchers import JobFailed


@pytest.fixture(scope="module")
def shards(tmp_path_factory, sample_docs):
    root = tmp_path_factory.mktemp("orchestrate")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": v[:1500]}) + "\n" for k, v in sample_docs.items()))
    return orchestrate.shard_corpus([str(corpus)], str(root / "input"), num_shards=1)


def test_render_config_applies_to_every_unit_and_the_log_is_streamed(shards, tmp_path):
    lines: list[str] = []
    out = str(tmp_path / "out")
    rendered = orchestrate.render_shards(shards, out, "web=1", workers=1, render_config="dark", log=lines.append)
    assert rendered["uri"] == out and rendered["pages"] >= rendered["units"] >= 1
    assert rendered["compression_ratio"] > 1 and rendered["visual_tokens"] > 0, "the render's summary is returned"
    logged = []
    verified = orchestrate.verify_dataset(rendered, log=logged.append)
    assert verified["uri"] == out and verified["shards"] >= 1 and verified["samples"] == rendered["pages"]
    assert verified["compression_ratio"] == rendered["compression_ratio"]
    assert logged[0].startswith(f"verified {out}: {verified['shards']} shards") and "pages decoded" in logged[0]
    stats = json.loads(next((tmp_path / "out").glob("*.stats.json")).read_text())
    assert {document["style"] for document in stats["documents"]} == {"dark"}
    assert lines[0].startswith("launching: ") and any("wrote 1 shards" in line for line in lines)


def test_a_bad_render_config_fails_with_the_commands_error(shards, tmp_path):
    with pytest.raises(JobFailed, match="no-such-style"):
        orchestrate.render_shards(shards, str(tmp_path / "out"), "web=1", workers=1, render_config="no-such-style",
                                  log=lambda line: None)
    assert not (tmp_path / "out" / "manifest.json").exists()


def publish_state(root, found):
    from pipeline import storage

    storage.get_storage(root).write_text(storage.join(root, orchestrate.STATE),
                                         json.dumps({"version": "v", "objects": found["snapshot"]}))


def test_find_new_sees_a_rewrite_of_the_same_size_locally(tmp_path):
    raw, state = tmp_path / "raw", str(tmp_path / "state")
    raw.mkdir()
    (raw / "a.jsonl").write_text('{"id": "a", "text": "one"}\n')
    (raw / "b.jsonl").write_text('{"id": "b", "text": "two"}\n')
    first = orchestrate.find_new_objects(str(raw), state)
    assert len(first["changed"]) == 2
    publish_state(state, first)
    assert orchestrate.find_new_objects(str(raw), state)["changed"] == []
    import os

    (raw / "a.jsonl").write_text('{"id": "a", "text": "ONE"}\n')  # same size, new content
    os.utime(raw / "a.jsonl", ns=(1, 1))  # even with an older timestamp than before
    assert orchestrate.find_new_objects(str(raw), state)["changed"] == [str(raw / "a.jsonl")]


def test_find_new_sees_a_rewrite_of_the_same_size_on_s3(s3):
    s3.proxy.heal()
    client = s3.client()
    client.put_object(Bucket=s3.bucket, Key="find-new/raw/a.jsonl", Body=b'{"id": "a", "text": "one"}\n')
    first = orchestrate.find_new_objects(s3.uri("find-new", "raw"), s3.uri("find-new", "state"))
    assert first["changed"] == [s3.uri("find-new", "raw", "a.jsonl")]
    publish_state(s3.uri("find-new", "state"), first)
    client.put_object(Bucket=s3.bucket, Key="find-new/raw/a.jsonl", Body=b'{"id": "a", "text": "ONE"}\n')
    again = orchestrate.find_new_objects(s3.uri("find-new", "raw"), s3.uri("find-new", "state"))
    assert again["changed"] == [s3.uri("find-new", "raw", "a.jsonl")]


def test_a_search_without_its_validation_file_fails_naming_it(tmp_path):
    with pytest.raises(JobFailed, match="missing-validation.jsonl"):
        orchestrate.search_render_config(str(tmp_path / "missing-validation.jsonl"), str(tmp_path / "s"), 1, 2,
                                         log=lambda line: None)


def test_a_run_started_by_several_asset_events_trains_on_every_dataset_in_order(tmp_path):
    from datetime import datetime, timezone
    from types import SimpleNamespace

    def event(day, dataset):
        return SimpleNamespace(timestamp=datetime(2026, 11, day, tzinfo=timezone.utc), extra={"dataset": dataset})

    events = [event(3, "s3://b/runs/3/rendered"), event(1, "s3://b/runs/1/rendered"), event(2, None)]
    assert orchestrate.datasets_from_events(events, "fallback") == "s3://b/runs/1/rendered,s3://b/runs/3/rendered"
    assert orchestrate.datasets_from_events([], "fallback") == "fallback"


def test_shard_uris_reads_several_datasets_in_order(tmp_path):
    from pipeline.corpus.reader import shard_uris

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}-0.tar").write_bytes(b"")
    assert shard_uris(f"{tmp_path / 'b'},{tmp_path / 'a'}") == [str(tmp_path / "b" / "b-0.tar"),
                                                               str(tmp_path / "a" / "a-0.tar")]

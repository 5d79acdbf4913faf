"""Runs that cannot be mixed, lost or blown up: settings fingerprints, one writer per output, what a run may
delete, empty results, file:// URIs. On a real Dask LocalCluster, locally and on S3 (moto)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import storage
from pipeline.cli import main
from pipeline.corpus.render_corpus import CorpusRenderSettings, MixedSettingsError, render_corpus
from pipeline.corpus.sharder import CorpusSharder, ShardSettings
from pipeline.corpus.verify import verify_dataset
from pipeline.render.styles import resolve_config


@pytest.fixture(scope="module")
def input_shards(tmp_path_factory, sample_docs):
    root = tmp_path_factory.mktemp("runs")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": v[:6_000]}) + "\n" for k, v in sample_docs.items()))
    CorpusSharder(ShardSettings(num_shards=3, max_chars=4_000)).run([str(corpus)], str(root / "shards"))
    return str(root / "shards")


def test_a_rerun_with_other_settings_refuses_and_overwrite_replaces(tmp_path, input_shards, dask_client, capsys):
    out = tmp_path / "out"
    render_corpus(input_shards, str(out), CorpusRenderSettings(styles={"web": 1.0}, seed=1), client=dask_client)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    document = resolve_config("document", None).to_glyph_dict()
    for change, named in (({"styles": {"dark": 1.0}}, "styles: {'web': 1.0} -> {'dark': 1.0}"),
                          ({"seed": 2}, "seed: 1 -> 2"), ({"config": document}, "config: none -> a config"),
                          ({"backend": "pdf"}, "backend: skia -> pdf")):
        settings = CorpusRenderSettings(**{"styles": {"web": 1.0}, "seed": 1, **change})
        with pytest.raises(MixedSettingsError, match="--overwrite") as caught:
            render_corpus(input_shards, str(out), settings, client=dask_client)
        assert named in str(caught.value)
    # A killed run of other settings left only some markers and no manifest: still refused.
    (out / "manifest.json").unlink()
    (out / "corpus-train-000000.stats.json").unlink()
    assert main(["render-corpus", input_shards, "--out", str(out), "--styles", "dark=1", "--seed", "1",
                 "--scheduler", dask_client.scheduler.address]) == 2
    error = capsys.readouterr().err
    assert "pipeline: error:" in error and "made with other settings" in error and "Traceback" not in error
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {k: v for k, v in before.items()
                                                              if k not in ("manifest.json",
                                                                           "corpus-train-000000.stats.json")}
    manifest = render_corpus(input_shards, str(out), CorpusRenderSettings(styles={"dark": 1.0}, seed=1,
                                                                          overwrite=True), client=dask_client)
    assert set(manifest["styles"]) <= {"dark", "code"} and verify_dataset(str(out)) == []
    again = render_corpus(input_shards, str(out), CorpusRenderSettings(styles={"dark": 1.0}, seed=1),
                          client=dask_client)
    assert again["fingerprint"] == manifest["fingerprint"], "the same settings resume"


def test_verify_fails_on_mixed_fingerprints(tmp_path, input_shards, dask_client):
    out = tmp_path / "out"
    render_corpus(input_shards, str(out), CorpusRenderSettings(styles={"web": 1.0}), client=dask_client)
    marker = out / "corpus-train-000002.stats.json"
    stats = json.loads(marker.read_text())
    marker.write_text(json.dumps({**stats, "fingerprint": "0" * 16}))
    problems = verify_dataset(str(out))
    assert len(problems) == 1 and "the dataset mixes two runs" in problems[0]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_runs_at_once_one_writes_the_other_refuses(where, tmp_path, input_shards, dask_client, request):
    if where == "local":
        out = str(tmp_path / "out")
    else:
        s3 = request.getfixturevalue("s3")
        s3.proxy.heal()
        out = s3.uri(f"race-{os.getpid()}")
    command = [sys.executable, "-m", "pipeline.cli", "render-corpus", input_shards, "--out", out,
               "--scheduler", dask_client.scheduler.address, "--styles"]
    runs = [subprocess.Popen(command + [style], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for style in ("web=1", "dark=1")]
    results = [(*run.communicate(timeout=300), run.returncode) for run in runs]
    assert sorted(code for _, _, code in results) == [0, 2], [err[-800:] for _, err, _ in results]
    refused = next(err for _, err, code in results if code == 2)
    assert "another run is writing here" in refused and "(render-corpus) by" in refused
    assert verify_dataset(out) == []
    manifest = json.loads(storage.get_storage(out).read_text(storage.join(out, "manifest.json")))
    stats = [json.loads(storage.get_storage(out).read_text(storage.join(out, s["shard"][:-4] + ".stats.json")))
             for s in manifest["shards"]]
    assert len({s["fingerprint"] for s in stats}) == 1 and len(set(manifest["styles"]) - {"code"}) == 1


def test_a_run_deletes_only_its_own_kind_of_temporaries(tmp_path, input_shards, dask_client):
    out = tmp_path / "out"
    out.mkdir()
    users = [out / ".notes.tmp", out / "draft.tmp", out / ".corpus-train-000000.tar.4242.tmp"]
    for path in users:
        path.write_text("a user's file")
    dead = out / storage.temporary_name("corpus-train-000001.tar", "run-0123456789ab")
    dead.write_text("half a tar from a killed run")
    render_corpus(input_shards, str(out), CorpusRenderSettings(styles={"web": 1.0}), client=dask_client)
    assert all(path.read_text() == "a user's file" for path in users) and not dead.exists()
    problems = verify_dataset(str(out))
    assert sorted(problems) == sorted(f"{path}: not part of the dataset (orphan or temporary object)"
                                      for path in users), "verify still names what is not the dataset's"


def test_file_uris_work_like_paths_and_manifests_hold_absolute_uris(tmp_path, sample_docs, dask_client,
                                                                     monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = list(sample_docs.values())
    (corpus / "a.txt").write_text(texts[0][:3000])
    (corpus / "b.txt").write_text(texts[1][:3000])
    monkeypatch.chdir(tmp_path)
    sharding = CorpusSharder(ShardSettings(num_shards=2)).run([f"file://{corpus}"], "shards")
    assert sharding["documents"] == 2 and sharding["skipped_count"] == 0, "distinct files, distinct ids"
    assert sharding["inputs"] == [str(corpus)]
    manifest = render_corpus(f"file://{tmp_path}/shards", "rendered", CorpusRenderSettings(styles={"web": 1.0}),
                             client=dask_client)
    assert manifest["input"] == str(tmp_path / "shards")
    monkeypatch.chdir("/")
    assert verify_dataset(f"file://{tmp_path}/rendered") == [] and verify_dataset(str(tmp_path / "rendered")) == []


def test_empty_results_are_errors_unless_allowed(tmp_path, dask_client, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\n{broken\n')
    assert main(["shard", str(bad), "--out", str(tmp_path / "shards"), "--num-shards", "2"]) == 2
    error = capsys.readouterr().err
    assert "no documents to shard" in error and "--allow-empty" in error and "1 invalid JSON" in error
    assert not (tmp_path / "shards").exists(), "nothing published"
    assert main(["shard", str(bad), "--out", str(tmp_path / "shards"), "--num-shards", "2", "--allow-empty"]) == 0
    out = str(tmp_path / "rendered")
    with pytest.raises(ValueError, match="0 pages .*--allow-empty"):
        render_corpus(str(tmp_path / "shards"), out, CorpusRenderSettings(styles={"web": 1.0}), client=dask_client)
    assert verify_dataset(out) == [f"{out}/manifest.json: no dataset manifest (the run has not finished)"]
    manifest = render_corpus(str(tmp_path / "shards"), out, CorpusRenderSettings(styles={"web": 1.0},
                                                                                 allow_empty=True),
                             client=dask_client)
    assert manifest["pages"] == 0 and verify_dataset(out) == []
    path = Path(out) / "manifest.json"
    path.write_text(json.dumps({**manifest, "settings": {**manifest["settings"], "allow_empty": False}}))
    assert verify_dataset(out) == [f"{path}: the dataset is empty (0 pages)"]


def test_verify_reports_a_damaged_tar_header(tmp_path, input_shards, dask_client):
    out = tmp_path / "out"
    render_corpus(input_shards, str(out), CorpusRenderSettings(styles={"web": 1.0}), client=dask_client)
    tar = out / "corpus-train-000001.tar"
    data = bytearray(tar.read_bytes())
    data[600:1100] = b"\xff" * 500  # the second member's header and more
    tar.write_bytes(bytes(data))
    problems = verify_dataset(str(out))
    assert any("not a readable tar" in p or "does not decode" in p for p in problems), problems
    assert any("sha256 does not match" in p for p in problems)


def test_a_killed_runs_multipart_upload_is_aborted_by_the_next_run(s3, input_shards, dask_client, capsys):
    s3.proxy.heal()
    client = s3.client()
    prefix = f"mp-left-{os.getpid()}"
    left = client.create_multipart_upload(Bucket=s3.bucket, Key=f"{prefix}/out/corpus-train-000000.tar")["UploadId"]
    client.upload_part(Bucket=s3.bucket, Key=f"{prefix}/out/corpus-train-000000.tar", UploadId=left, PartNumber=1,
                       Body=b"half a shard")
    other = client.create_multipart_upload(Bucket=s3.bucket, Key=f"{prefix}/elsewhere/x.bin")["UploadId"]
    render_corpus(input_shards, s3.uri(prefix, "out"), CorpusRenderSettings(styles={"web": 1.0}),
                  client=dask_client)
    open_uploads = {u["UploadId"] for u in client.list_multipart_uploads(Bucket=s3.bucket, Prefix=prefix)
                    .get("Uploads", [])}
    assert left not in open_uploads and other in open_uploads, "only the output's own leftovers are aborted"
    assert f"aborted an unfinished upload left by a killed run: {s3.uri(prefix, 'out')}/corpus-train-000000.tar" \
        in capsys.readouterr().err
    client.abort_multipart_upload(Bucket=s3.bucket, Key=f"{prefix}/elsewhere/x.bin", UploadId=other)
    assert verify_dataset(s3.uri(prefix, "out")) == []

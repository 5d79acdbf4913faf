"""render-corpus end to end on a real Dask LocalCluster, local and on S3; verify; resume after kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import read_shards, storage
from pipeline.cli import main
from pipeline.corpus.render_corpus import CorpusRenderSettings, render_corpus
from pipeline.corpus.sharder import CorpusSharder, ShardSettings, read_units
from pipeline.corpus.verify import inspect_dataset, verify_dataset

STYLES = {"document": 0.3, "web": 0.2, "code": 0.1, "dark": 0.2, "random": 0.2}


@pytest.fixture(scope="module")
def input_shards(tmp_path_factory, sample_docs):
    root = tmp_path_factory.mktemp("corpus")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": v[:30_000]}) + "\n" for k, v in sample_docs.items()))
    CorpusSharder(ShardSettings(num_shards=4, max_chars=12_000)).run([str(corpus)], str(root / "shards"))
    return str(root / "shards")


def units_by_id(shards_uri: str) -> dict[str, str]:
    summary = json.loads(storage.get_storage(shards_uri).read_text(storage.join(shards_uri, "sharding.json")))
    return {u["id"]: u["text"] for s in summary["shards"] for u in read_units(storage.join(shards_uri, s["shard"]))}


def joined_pages(uri: str) -> dict[str, str]:
    pages: dict[str, list] = {}
    for sample in read_shards(uri):
        pages.setdefault(sample["json"]["source_id"], []).append((sample["json"]["page"], sample["txt"]))
    return {k: "".join(t for _, t in sorted(v)) for k, v in pages.items()}


def tar_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def test_local_render_verify_and_rerun(tmp_path, input_shards, dask_client):
    out = str(tmp_path / "out")
    settings = CorpusRenderSettings(styles=STYLES, seed=5)
    manifest = render_corpus(input_shards, out, settings, client=dask_client)
    units = units_by_id(input_shards)
    assert manifest["units"] == manifest["input_units"] == len(units) and manifest["skipped_count"] == 0
    assert [s["shard"] for s in manifest["shards"]] == [f"corpus-train-{i:06d}.tar" for i in range(4)]
    assert [s["bytes"] for s in manifest["shards"]] == [(tmp_path / "out" / s["shard"]).stat().st_size
                                                      for s in manifest["shards"]], "real sizes in the manifest"
    assert set(manifest["styles"]) >= {"code", "document"}
    assert verify_dataset(out) == []
    assert joined_pages(out) == units

    first = tar_bytes(Path(out))
    mtimes = {p: p.stat().st_mtime_ns for p in Path(out).glob("*.tar")}
    again = render_corpus(input_shards, out, settings, client=dask_client)
    assert again["samples"] == manifest["samples"]
    assert {p: p.stat().st_mtime_ns for p in Path(out).glob("*.tar")} == mtimes, "complete shards are skipped"
    redone = render_corpus(input_shards, out, CorpusRenderSettings(styles=STYLES, seed=5, overwrite=True),
                           client=dask_client)
    assert tar_bytes(Path(out)) == first, "rendering is deterministic"
    assert redone["samples"] == manifest["samples"]

    report = inspect_dataset(out, tmp_path / "sheet.png")
    assert report["pages"] == manifest["pages"] and (tmp_path / "sheet.png").stat().st_size > 0
    assert sum(s["units"] for s in report["by_style"].values()) == len(units)


def test_verify_finds_what_is_wrong(tmp_path, input_shards, dask_client):
    out = tmp_path / "out"
    render_corpus(input_shards, str(out), CorpusRenderSettings(styles={"document": 1.0}), client=dask_client)
    assert verify_dataset(str(out)) == []
    tar = out / "corpus-train-000001.tar"
    data = bytearray(tar.read_bytes())
    data[-2000] ^= 0xFF
    tar.write_bytes(bytes(data))
    (out / "corpus-train-000002.stats.json").unlink()
    (out / ".corpus-train-000003.tar.123.tmp").write_bytes(b"partial")
    problems = "\n".join(verify_dataset(str(out)))
    assert "corpus-train-000001.tar: sha256 does not match" in problems
    assert "corpus-train-000002.stats.json: completion marker missing" in problems
    assert ".corpus-train-000003.tar.123.tmp: not part of the dataset" in problems
    assert main(["verify", str(out)]) == 1
    assert main(["verify", str(tmp_path / "nothing")]) == 1


def test_s3_end_to_end_with_500s_for_a_while(tmp_path, s3, sample_docs, dask_client):
    s3.proxy.heal()
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": v[:8000]}) + "\n" for k, v in sample_docs.items()))
    s3.client().upload_file(str(corpus), s3.bucket, "raw/corpus.jsonl")
    assert main(["shard", s3.uri("raw"), "--out", s3.uri("in"), "--num-shards", "2", "--max-chars", "5000"]) == 0
    s3.proxy.fail("error500", connections=3)  # the store answers 500s for a while, then recovers
    manifest = render_corpus(s3.uri("in"), s3.uri("out"), CorpusRenderSettings(styles={"web": 0.5, "dark": 0.5}),
                             client=dask_client)
    assert s3.proxy.faulted == 3
    assert verify_dataset(s3.uri("out")) == []
    assert joined_pages(s3.uri("out")) == units_by_id(s3.uri("in"))
    assert manifest["units"] == manifest["input_units"]
    sample = next(iter(read_shards(s3.uri("out"))))
    assert sample["png"].size == (sample["json"]["width"], sample["json"]["height"])


def test_store_down_fails_clearly_then_rerun_completes(tmp_path, s3, input_shards, dask_client):
    s3.proxy.fail("down")
    with pytest.raises(RuntimeError, match="down-out/.* failed .* attempts over"):  # its lease, or its shards
        render_corpus(input_shards, s3.uri("down-out"), CorpusRenderSettings(styles={"document": 1.0}),
                      client=dask_client)
    s3.proxy.heal()
    assert verify_dataset(s3.uri("down-out"))  # not complete: no manifest yet
    render_corpus(input_shards, s3.uri("down-out"), CorpusRenderSettings(styles={"document": 1.0}),
                  client=dask_client)
    assert verify_dataset(s3.uri("down-out")) == []


def test_kill_minus_nine_then_rerun_gives_the_same_shards(tmp_path, input_shards):
    """The whole run killed with SIGKILL mid-way; a re-run completes with identical bytes."""
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    command = [sys.executable, "-m", "pipeline.cli", "render-corpus", input_shards, "--workers", "2",
               "--styles", "document=0.5,dark=0.5", "--seed", "3"]
    run = subprocess.Popen(command + ["--out", str(killed)], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(killed.glob("*.stats.json")):
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    done_before = len(list(killed.glob("*.stats.json")))
    assert 1 <= done_before < 4, "killed mid-way"
    assert verify_dataset(str(killed)), "an interrupted run does not verify"
    for target in (killed, clean):
        result = subprocess.run(command + ["--out", str(target)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    assert verify_dataset(str(killed)) == []
    assert tar_bytes(killed) == tar_bytes(clean)
    assert sorted(p.name for p in killed.iterdir()) == sorted(p.name for p in clean.iterdir())


def test_cli_with_an_existing_scheduler(tmp_path, input_shards, dask_client, capsys):
    out = tmp_path / "via-scheduler"
    assert main(["render-corpus", input_shards, "--out", str(out), "--styles", "dark=1",
                 "--scheduler", dask_client.scheduler.address]) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert printed["styles"] == {"dark": printed["units"]} or set(printed["styles"]) <= {"dark", "code"}
    shards = len(list(out.glob("*.tar")))
    progress = [line for line in captured.err.splitlines() if line.startswith("rendered ")]
    assert len(progress) == shards and progress[-1].startswith(f"rendered {shards}/{shards} shards: "), \
        "a log that is no terminal gets one plain line per finished shard"
    assert "pages/s, eta " in progress[0]
    assert main(["verify", str(out)]) == 0
    assert main(["inspect", str(out), "--sheet", str(tmp_path / "sheet.png")]) == 0
    assert (tmp_path / "sheet.png").exists()


def test_worker_killed_mid_run_is_replaced_and_nothing_is_lost(tmp_path, input_shards, dask_client):
    import threading

    out, clean = tmp_path / "out", tmp_path / "clean"
    settings = CorpusRenderSettings(styles={"document": 0.5, "web": 0.5}, seed=9)
    render_corpus(input_shards, str(clean), settings, client=dask_client)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(m=render_corpus(input_shards, str(out), settings,
                                                                           client=dask_client)))
    thread.start()
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob("*.tar")) and thread.is_alive():
        time.sleep(0.02)
    victim = next(iter(dask_client.run(os.getpid).values()))
    os.kill(victim, signal.SIGKILL)  # a worker dies mid-run; its nanny starts a new one
    thread.join(timeout=240)
    assert "m" in result, "the run finished"
    assert verify_dataset(str(out)) == []
    assert tar_bytes(out) == tar_bytes(clean)
    dask_client.wait_for_workers(2, timeout=60)

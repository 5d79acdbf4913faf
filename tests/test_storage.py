"""The storage module against a real S3 API server on 127.0.0.1, and on local folders."""

import os

import pytest

from pipeline import storage


@pytest.fixture
def healthy(s3):
    s3.proxy.heal()
    yield s3
    s3.proxy.heal()


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_round_trip(kind, tmp_path, healthy):
    base = str(tmp_path / "data") if kind == "local" else healthy.uri(f"rt-{os.getpid()}")
    store = storage.get_storage(base)
    store.write_text(storage.join(base, "a/one.txt"), "héllo")
    local = tmp_path / "blob.bin"
    local.write_bytes(os.urandom(1000))
    store.upload(local, storage.join(base, "a/two.bin"))
    assert store.read_text(storage.join(base, "a/one.txt")) == "héllo"
    assert store.exists(storage.join(base, "a/two.bin")) and not store.exists(storage.join(base, "nope"))
    listed = [(o.uri.rsplit("/", 1)[-1], o.size) for o in store.list(base)]
    assert listed == [("one.txt", 6), ("two.bin", 1000)]
    back = tmp_path / "back.bin"
    store.download(storage.join(base, "a/two.bin"), back)
    assert back.read_bytes() == local.read_bytes()
    with store.open_read(storage.join(base, "a/one.txt")) as handle:
        assert handle.read() == "héllo".encode()
    store.delete(storage.join(base, "a/one.txt"))
    assert not store.exists(storage.join(base, "a/one.txt"))


def test_prefix_listing_is_a_folder(healthy):
    store = storage.get_storage(healthy.uri())
    store.write_text(healthy.uri("pre/x"), "1")
    store.write_text(healthy.uri("prefix-other/y"), "2")
    assert [o.uri for o in store.list(healthy.uri("pre"))] == [healthy.uri("pre/x")]


def test_multipart_upload_survives_dropped_connections(healthy, tmp_path, monkeypatch):
    monkeypatch.setenv("GLYPH_S3_MULTIPART_MB", "5")
    data = os.urandom(12 * 1024 * 1024)  # three parts
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    healthy.proxy.fail("down", connections=3)  # the server vanishes for three connections, then comes back
    storage.get_storage(healthy.uri()).upload(local, healthy.uri("big.bin"))
    assert healthy.proxy.faulted == 3
    back = tmp_path / "back.bin"
    storage.get_storage(healthy.uri()).download(healthy.uri("big.bin"), back)
    assert back.read_bytes() == data


def test_500s_for_a_while_are_retried(healthy):
    healthy.proxy.fail("error500", connections=2)
    store = storage.get_storage(healthy.uri())
    store.write_text(healthy.uri("after-500s.txt"), "ok")
    assert healthy.proxy.faulted == 2
    assert store.read_text(healthy.uri("after-500s.txt")) == "ok"


@pytest.mark.parametrize("mode", ["down", "error500"])
def test_server_that_stays_down_gives_a_clear_error_and_publishes_nothing(healthy, tmp_path, monkeypatch, mode):
    monkeypatch.setenv("GLYPH_S3_MULTIPART_MB", "5")
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(11 * 1024 * 1024))
    key = f"never-{mode}.bin"
    healthy.proxy.fail(mode)
    with pytest.raises(storage.StorageError) as caught:
        storage.get_storage(healthy.uri()).upload(local, healthy.uri(key))
    message = str(caught.value)
    assert healthy.uri(key) in message and "failed" in message
    assert "test-secret-do-not-log" not in message and "test-access-key" not in message
    healthy.proxy.heal()
    assert not storage.get_storage(healthy.uri()).exists(healthy.uri(key)), "nothing half-published"


def test_missing_object_error_names_the_uri(healthy):
    with pytest.raises(storage.StorageError, match="NoSuchKey"):
        storage.get_storage(healthy.uri()).read_bytes(healthy.uri("does/not/exist"))


def test_local_writes_are_atomic(tmp_path):
    target = tmp_path / "out" / "file.json"
    storage.get_storage(str(target)).write_text(str(target), "{}")
    assert target.read_text() == "{}" and oct(target.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]


def test_missing_bucket_and_missing_credentials_say_what_is_wrong(healthy, tmp_path, monkeypatch):
    local = tmp_path / "a.txt"
    local.write_text("a")
    with pytest.raises(storage.StorageError) as caught:
        storage.get_storage("s3://no-such-bucket-here/x").upload(local, "s3://no-such-bucket-here/x/a.txt")
    assert "bucket 'no-such-bucket-here' does not exist" in str(caught.value)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask a metadata address for credentials
    monkeypatch.setenv("AWS_ENDPOINT_URL", os.environ["AWS_ENDPOINT_URL"] + "/")  # a client made anew
    with pytest.raises(storage.StorageError) as caught:
        storage.get_storage(healthy.uri()).read_bytes(healthy.uri("a.txt"))
    message = str(caught.value)
    assert "Unable to locate credentials" in message and "AWS_ACCESS_KEY_ID" in message and "attempts" not in message


def _attempts(message: str) -> int:
    import re

    found = re.search(r"\((\d+) attempts over", message)
    return int(found.group(1)) if found else 1


def test_attempt_counts_are_true_after_many_failing_calls(healthy, monkeypatch):
    """botocore's standard mode stops retrying once a process has seen a few failures; ours keeps its budget,
    and each message's count of attempts is the number of connections the server saw."""
    monkeypatch.setenv("GLYPH_S3_RETRY_SECONDS", "1.5")
    healthy.proxy.fail("down")
    stated = []
    for number in range(5):
        with pytest.raises(storage.StorageError) as caught:
            storage.get_storage(healthy.uri()).write_text(healthy.uri(f"count-{number}.txt"), "x")
        stated.append(_attempts(str(caught.value)))
    assert min(stated) >= 3, stated  # the fifth call retried as much as the first
    assert sum(stated) == healthy.proxy.faulted


@pytest.mark.slow
def test_a_sixty_second_outage_is_ridden_out_with_the_default_budget(healthy, monkeypatch):
    import threading
    import time

    monkeypatch.delenv("GLYPH_S3_RETRY_SECONDS")  # the default budget
    healthy.proxy.fail("down")
    refused = []

    def end_outage():
        refused.append(healthy.proxy.faulted)  # connections reset during the outage
        healthy.proxy.heal()

    timer = threading.Timer(60, end_outage)
    timer.start()
    started = time.monotonic()
    try:
        storage.get_storage(healthy.uri()).write_text(healthy.uri("after-outage.txt"), "made it")
    finally:
        timer.cancel()
    assert time.monotonic() - started >= 60 and refused[0] > 5
    assert storage.get_storage(healthy.uri()).read_text(healthy.uri("after-outage.txt")) == "made it"


def test_an_endpoint_that_never_answers_cannot_hold_a_call(monkeypatch):
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts connections (the kernel does) and never answers
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setenv("GLYPH_S3_READ_TIMEOUT", "1")
    monkeypatch.setenv("GLYPH_S3_RETRY_SECONDS", "3")
    for name, value in (("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    started = time.monotonic()
    try:
        with pytest.raises(storage.StorageError) as caught:
            storage.get_storage("s3://silent/x").read_bytes("s3://silent/x/a.txt")
    finally:
        listener.close()
    assert time.monotonic() - started < 3 + 2 * 1 + 2  # the budget, one attempt's timeout, slack
    assert "timeout" in str(caught.value).lower() and _attempts(str(caught.value)) >= 2


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_conditional_create_replace_and_delete(kind, tmp_path, healthy):
    base = str(tmp_path) if kind == "local" else healthy.uri(f"cond-{os.getpid()}")
    uri = storage.join(base, "lock.json")
    store = storage.get_storage(base)
    assert store.read_versioned(uri) is None
    created = store.create_exclusive(uri, b"first")
    assert created and store.create_exclusive(uri, b"second") is None
    data, version = store.read_versioned(uri)
    assert data == b"first" and version == created
    replaced = store.replace_if(uri, b"third", version)
    assert replaced and replaced != version
    assert store.replace_if(uri, b"fourth", version) is None, "the version it was read at has gone"
    assert not store.delete_if(uri, version)
    data, version = store.read_versioned(uri)
    assert data == b"third" and store.delete_if(uri, version) and not store.exists(uri)


def test_stale_multipart_uploads_under_the_prefix_are_aborted(healthy):
    import time

    client = healthy.client()
    mine = client.create_multipart_upload(Bucket=healthy.bucket, Key="mp/out/a.tar")["UploadId"]
    client.upload_part(Bucket=healthy.bucket, Key="mp/out/a.tar", UploadId=mine, PartNumber=1, Body=b"x" * 100)
    other = client.create_multipart_upload(Bucket=healthy.bucket, Key="mp/elsewhere/b.tar")["UploadId"]
    aborted = storage.S3Storage().abort_stale_uploads(healthy.uri("mp/out"), started_before=time.time() + 5)
    assert aborted == [healthy.uri("mp/out/a.tar")]
    left = {u["UploadId"] for u in client.list_multipart_uploads(Bucket=healthy.bucket).get("Uploads", [])}
    assert other in left and mine not in left
    client.abort_multipart_upload(Bucket=healthy.bucket, Key="mp/elsewhere/b.tar", UploadId=other)
    # (moto reports every upload as begun in 2010, so that uploads begun after the cut-off are kept is
    # left to S3's own Initiated times; the comparison is the one line in abort_stale_uploads.)


def test_file_uris_are_local_paths_and_uris_become_absolute(tmp_path, monkeypatch):
    target = tmp_path / "a b" / "x.txt"
    uri = "file://" + str(target).replace(" ", "%20")
    storage.get_storage(uri).write_text(uri, "hello")
    assert target.read_text() == "hello"
    assert [o.uri for o in storage.list_uris("file://" + str(tmp_path))] == [str(target)]
    monkeypatch.chdir(tmp_path)
    assert storage.absolute("a b/x.txt") == str(target) and storage.absolute(uri) == str(target)
    assert storage.absolute("s3://b/k") == "s3://b/k"
    with pytest.raises(storage.StorageError, match="file:///abs/path"):
        storage.get_storage("file://host/x").read_bytes("file://host/x")


def test_run_temporaries_carry_the_run_id(tmp_path):
    store = storage.get_storage(str(tmp_path), run_id="run-0123456789ab")
    name = storage.temporary_name("x.tar", "run-0123456789ab")
    assert storage.is_run_temporary(name) and storage.is_run_temporary(name, "run-0123456789ab")
    assert not storage.is_run_temporary(name, "run-ffffffffffff")
    assert not storage.is_run_temporary(".notes.tmp") and not storage.is_run_temporary("draft.tmp")
    lease = storage.temporary_name(".glyph-lease.json", "run-0123456789ab")  # another run asking for the lease
    assert not storage.is_run_temporary(lease) and not storage.is_run_temporary(lease, "run-0123456789ab")
    store.write_text(str(tmp_path / "y.txt"), "y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.txt"]

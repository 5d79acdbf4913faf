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

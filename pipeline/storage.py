"""One storage interface for local folders (`/path`, `file:///path`) and S3 (`s3://bucket/prefix`).

The only module that imports boto3. S3 takes its endpoint, region and
credentials from the standard AWS environment and config files
(`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, profiles, ...), so
AWS, MinIO and Ceph work unchanged. Throttling, 5xx answers and dropped
connections are retried with exponential backoff (botocore's standard retry
mode); large files go up in multipart uploads, which S3 makes visible only
when complete. Errors name the URI and the S3 error code, never credentials.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import urlparse



def _max_attempts() -> int:
    """Attempts per S3 call, retries included (GLYPH_S3_MAX_ATTEMPTS, default 8)."""
    return int(os.environ.get("GLYPH_S3_MAX_ATTEMPTS", "8"))


def _multipart_bytes() -> int:
    """Files above this go up in parts of this size (GLYPH_S3_MULTIPART_MB, default 64)."""
    return int(float(os.environ.get("GLYPH_S3_MULTIPART_MB", "64")) * 1024 * 1024)


class StorageError(RuntimeError):
    """A storage operation failed for good (after retries); `code` is S3's error code when S3 gave one."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int
    version: str = ""  # changes when the content may have: S3 ETag, local modification time (ns)


def _local_info(path: Path) -> ObjectInfo:
    stat = path.stat()
    return ObjectInfo(str(path), stat.st_size, str(stat.st_mtime_ns))


def join(base: str, *parts: str) -> str:
    """Join URI parts with '/' (works for local paths and s3:// alike)."""
    out = base.rstrip("/")
    for part in parts:
        out += "/" + part.strip("/")
    return out


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def get_storage(uri: str) -> "Storage":
    return S3Storage() if is_s3(uri) else LocalStorage()


class Storage:
    """The interface. Paths are full URIs; folders are prefixes."""

    def read_bytes(self, uri: str) -> bytes: ...
    def write_bytes(self, uri: str, data: bytes) -> None: ...
    def upload(self, local: Path, uri: str) -> None: ...
    def download(self, uri: str, local: Path) -> None: ...
    def open_read(self, uri: str) -> BinaryIO: ...
    def exists(self, uri: str) -> bool: ...
    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...
    def delete(self, uri: str) -> None: ...

    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode("utf-8")

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode("utf-8"))


class LocalStorage(Storage):
    """Local files. Writes go to a temporary name in the same folder, then an atomic rename."""

    @staticmethod
    def path(uri: str) -> Path:
        return Path(urlparse(uri).path) if str(uri).startswith("file://") else Path(uri)

    def read_bytes(self, uri: str) -> bytes:
        return self.path(uri).read_bytes()

    def write_bytes(self, uri: str, data: bytes) -> None:
        target = self.path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp",
                                         delete=False) as handle:
            handle.write(data)
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, target)

    def upload(self, local: Path, uri: str) -> None:
        target = self.path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(local, temp)
        os.replace(temp, target)

    def download(self, uri: str, local: Path) -> None:
        shutil.copyfile(self.path(uri), local)

    def open_read(self, uri: str) -> BinaryIO:
        return self.path(uri).open("rb")

    def exists(self, uri: str) -> bool:
        return self.path(uri).exists()

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        root = self.path(prefix)
        if root.is_file():
            yield _local_info(root)
            return
        if not root.is_dir():
            return
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            yield _local_info(path)

    def delete(self, uri: str) -> None:
        self.path(uri).unlink(missing_ok=True)


def _split(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if not parsed.netloc:
        raise StorageError(f"{uri}: an S3 URI needs a bucket: s3://bucket/key")
    return parsed.netloc, parsed.path.lstrip("/")


@functools.lru_cache(maxsize=4)
def _client_for(pid: int, attempts: int, endpoint: str | None):
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": attempts, "mode": "standard"},
                    connect_timeout=10, read_timeout=60, tcp_keepalive=True)
    return boto3.session.Session().client("s3", config=config)


def _client():
    # boto3 clients are not fork-safe: one per process (and per retry setting and endpoint).
    return _client_for(os.getpid(), _max_attempts(), os.environ.get("AWS_ENDPOINT_URL"))


def _client_error_text(err, uri: str) -> str:
    """botocore's error code and message, with what a missing bucket means."""
    error = err.response.get("Error", {})
    code, message = error.get("Code", "?"), error.get("Message", "")
    if code == "NoSuchBucket":
        return f"S3 error {code}: bucket {_split(uri)[0]!r} does not exist (create it, or check the URI)"
    return f"S3 error {code}: {message}" if message else f"S3 error {code}"


class S3Storage(Storage):
    def _call(self, what: str, uri: str, fn, *args, **kwargs):
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        from botocore.exceptions import NoCredentialsError, PartialCredentialsError

        try:
            return fn(*args, **kwargs)
        except ClientError as err:
            raise StorageError(f"{what} {uri} failed: {_client_error_text(err, uri)}",
                               code=err.response.get("Error", {}).get("Code")) from None
        except (NoCredentialsError, PartialCredentialsError) as err:
            raise StorageError(f"{what} {uri} failed: {err} (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                               "or AWS_PROFILE)") from None
        except S3UploadFailedError as err:
            # boto3 aborts a failed multipart upload, so nothing half-written becomes visible.
            cause = err.__context__ if isinstance(err.__context__, ClientError) else None
            text = _client_error_text(cause, uri) if cause else str(err)
            raise StorageError(f"{what} {uri} failed: {text}") from None
        except BotoCoreError as err:
            raise StorageError(f"{what} {uri} failed (retried up to {_max_attempts()} attempts): "
                               f"{type(err).__name__}: {err}") from None

    def read_bytes(self, uri: str) -> bytes:
        bucket, key = _split(uri)
        body = self._call("read", uri, _client().get_object, Bucket=bucket, Key=key)["Body"]
        return self._call("read", uri, body.read)

    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = _split(uri)
        self._call("write", uri, _client().put_object, Bucket=bucket, Key=key, Body=data)

    def upload(self, local: Path, uri: str) -> None:
        from boto3.s3.transfer import TransferConfig

        bucket, key = _split(uri)
        part = _multipart_bytes()
        config = TransferConfig(multipart_threshold=part, multipart_chunksize=part)
        self._call("upload", uri, _client().upload_file, str(local), bucket, key, Config=config)

    def download(self, uri: str, local: Path) -> None:
        bucket, key = _split(uri)
        self._call("download", uri, _client().download_file, bucket, key, str(local))

    def open_read(self, uri: str) -> BinaryIO:
        bucket, key = _split(uri)
        return self._call("read", uri, _client().get_object, Bucket=bucket, Key=key)["Body"]

    def exists(self, uri: str) -> bool:
        bucket, key = _split(uri)
        try:
            self._call("exists", uri, _client().head_object, Bucket=bucket, Key=key)
            return True
        except StorageError as err:
            if err.code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        bucket, key = _split(prefix)
        if key and not key.endswith("/"):
            key += "/"  # a folder: s3://b/data must not list s3://b/data2/
        pages = _client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
        for page in self._call("list", prefix, list, pages):
            for item in page.get("Contents", []):
                yield ObjectInfo(f"s3://{bucket}/{item['Key']}", item["Size"], item.get("ETag", "").strip('"'))

    def delete(self, uri: str) -> None:
        bucket, key = _split(uri)
        self._call("delete", uri, _client().delete_object, Bucket=bucket, Key=key)


def file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def list_uris(prefix: str) -> list[ObjectInfo]:
    return list(get_storage(prefix).list(prefix))

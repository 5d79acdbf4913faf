"""One storage interface for local folders (`/path`, `file:///path`) and S3 (`s3://bucket/prefix`).

The only module that imports boto3. S3 takes its endpoint, region and
credentials from the standard AWS environment and config files
(`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, profiles, ...), so
AWS, MinIO and Ceph work unchanged.

Every S3 call rides out an outage of `GLYPH_S3_RETRY_SECONDS` (default 90):
throttling, 5xx answers, dropped connections and timeouts are retried here,
with capped exponential backoff and jitter, for that long (botocore's own
retries are off: its standard mode stops retrying for good once a process has
seen a few failures, and its attempt counts would be wrong). Connect and read
timeouts bound each attempt, so no call hangs. Large files go up in multipart
uploads, which S3 makes visible only when complete. Errors name the URI, the S3
error code and the true number of attempts, never credentials.

Local temporary files are named `.{name}.{run_id}.{token}.tmp`, so a run's
clean-up removes only temporaries written by pipeline runs (`is_run_temporary`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import unquote, urlparse

BACKOFF_FIRST_S = 0.25
BACKOFF_CAP_S = 8.0


def _env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        seconds = float(value) if value else default
    except ValueError:
        raise StorageError(f"{name}={value!r}: not a number of seconds") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise StorageError(f"{name}={value!r}: must be a finite number of seconds >= 0")
    return seconds


def _retry_seconds() -> float:
    """How long one S3 call keeps retrying through an outage (GLYPH_S3_RETRY_SECONDS, default 90)."""
    return _env_seconds("GLYPH_S3_RETRY_SECONDS", 90.0)


def _timeouts() -> tuple[float, float]:
    """Connect and read timeouts of one attempt (GLYPH_S3_CONNECT_TIMEOUT 10 s, GLYPH_S3_READ_TIMEOUT 30 s)."""
    return _env_seconds("GLYPH_S3_CONNECT_TIMEOUT", 10.0), _env_seconds("GLYPH_S3_READ_TIMEOUT", 30.0)


def new_run_id() -> str:
    """A run's id: it names the run's temporary files and its lease."""
    return f"run-{secrets.token_hex(6)}"


PROCESS_RUN_ID = new_run_id()  # for writes outside a named run
_RUN_TEMPORARY = re.compile(r"^\..+\.run-[0-9a-f]{12}\.[0-9a-f]{8}\.tmp$")


def temporary_name(name: str, run_id: str) -> str:
    return f".{name}.{run_id}.{secrets.token_hex(4)}.tmp"


def is_run_temporary(name: str, run_id: str | None = None) -> bool:
    """A temporary file written by a pipeline run (by `run_id`, if given); a user's own `.tmp` files are not.
    A lease's temporary never counts: another run may be writing it to ask for the lease right now, and
    a clean-up that removed it made that run fail with a raw ENOENT instead of "another run is writing here"."""
    if name.startswith("..glyph-lease.json."):  # temporary_name(".glyph-lease.json", run)
        return False
    return bool(_RUN_TEMPORARY.match(name)) and (run_id is None or f".{run_id}." in name)


def absolute(uri: str) -> str:
    """The URI as stored in manifests: s3:// unchanged, `file://` and relative paths as absolute paths."""
    uri = str(uri)
    if is_s3(uri):
        return uri
    return os.path.abspath(LocalStorage.path(uri))


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


def get_storage(uri: str, run_id: str | None = None) -> "Storage":
    """The storage for uri; `run_id` names the temporary files it writes."""
    return S3Storage() if is_s3(uri) else LocalStorage(run_id or PROCESS_RUN_ID)


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

    def create_exclusive(self, uri: str, data: bytes) -> str | None:
        """Write uri only if it does not exist, atomically: its new version, or None if it already existed."""
        raise NotImplementedError

    def read_versioned(self, uri: str) -> tuple[bytes, str] | None:
        """The object's bytes and a version that any change replaces; None if there is none."""
        raise NotImplementedError

    def replace_if(self, uri: str, data: bytes, version: str) -> str | None:
        """Replace uri only if it still has `version`: the new version, or None if it changed or vanished."""
        raise NotImplementedError

    def delete_if(self, uri: str, version: str) -> bool:
        """Delete uri only if it still has `version`."""
        raise NotImplementedError

    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode("utf-8")

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode("utf-8"))


class LocalStorage(Storage):
    """Local files. Writes go to a temporary name (carrying the run id) in the same folder, then an atomic
    rename. The conditional operations hold an advisory lock on their object's folder, so they are exact
    between processes of one host (and over NFS with working locks)."""

    def __init__(self, run_id: str | None = None):
        self.run_id = run_id or PROCESS_RUN_ID

    @staticmethod
    def path(uri: str) -> Path:
        uri = str(uri)
        if uri.startswith("file://"):
            parsed = urlparse(uri)
            if parsed.netloc not in ("", "localhost"):
                raise StorageError(f"{uri}: a file:// URI names a local path: file:///abs/path")
            return Path(unquote(parsed.path))
        return Path(uri)

    def _temporary(self, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.with_name(temporary_name(target.name, self.run_id))

    def read_bytes(self, uri: str) -> bytes:
        return self.path(uri).read_bytes()

    def write_bytes(self, uri: str, data: bytes) -> None:
        target = self.path(uri)
        temp = self._temporary(target)
        temp.write_bytes(data)
        os.chmod(temp, 0o644)
        os.replace(temp, target)

    def upload(self, local: Path, uri: str) -> None:
        target = self.path(uri)
        temp = self._temporary(target)
        shutil.copyfile(local, temp)
        os.replace(temp, target)

    @staticmethod
    @contextlib.contextmanager
    def _guard(target: Path):
        """An advisory lock on the object's folder (flock on the directory itself: no lock file left behind)."""
        import fcntl

        target.parent.mkdir(parents=True, exist_ok=True)
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            yield
        finally:
            os.close(folder)  # releases the lock

    @staticmethod
    def _version(path: Path) -> str:
        stat = path.stat()
        return f"{stat.st_ino}-{stat.st_mtime_ns}-{stat.st_size}"

    def _has_version(self, target: Path, version: str) -> bool:
        try:
            return self._version(target) == version
        except FileNotFoundError:
            return False

    def create_exclusive(self, uri: str, data: bytes) -> str | None:
        target = self.path(uri)
        temp = self._temporary(target)
        temp.write_bytes(data)
        os.chmod(temp, 0o644)
        try:
            with self._guard(target):
                os.link(temp, target)  # atomic, and fails if the target exists
                return self._version(target)
        except FileExistsError:
            return None
        finally:
            temp.unlink(missing_ok=True)

    def read_versioned(self, uri: str) -> tuple[bytes, str] | None:
        target = self.path(uri)
        with self._guard(target):
            try:
                return target.read_bytes(), self._version(target)
            except FileNotFoundError:
                return None

    def replace_if(self, uri: str, data: bytes, version: str) -> str | None:
        target = self.path(uri)
        with self._guard(target):
            if not self._has_version(target, version):
                return None
            self.write_bytes(uri, data)
            return self._version(target)

    def delete_if(self, uri: str, version: str) -> bool:
        target = self.path(uri)
        with self._guard(target):
            if not self._has_version(target, version):
                return False
            target.unlink()
            return True

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
def _client_for(pid: int, timeouts: tuple[float, float], endpoint: str | None):
    import boto3
    from botocore.config import Config

    # One attempt per botocore call: S3Storage._call retries, so its budget and attempt counts are true.
    config = Config(retries={"total_max_attempts": 1}, connect_timeout=timeouts[0], read_timeout=timeouts[1],
                    tcp_keepalive=True)
    return boto3.session.Session().client("s3", config=config)


def _client():
    # boto3 clients are not fork-safe: one per process (and per timeout setting and endpoint).
    return _client_for(os.getpid(), _timeouts(), os.environ.get("AWS_ENDPOINT_URL"))


RETRYABLE_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "Throttling", "ThrottlingException",
                             "RequestTimeout", "RequestTimeTooSkewed", "TooManyRequests", "OperationAborted"})


def _retryable(err: BaseException) -> bool:
    """Worth another attempt: throttling, 5xx answers, lost connections and timeouts (not a missing key,
    a denied request or missing credentials)."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (BotoCoreError, ClientError, NoCredentialsError, ParamValidationError,
                                     PartialCredentialsError)

    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or status == 429 or error.get("Code") in RETRYABLE_CODES
    if isinstance(err, S3UploadFailedError):
        cause = err.__context__
        return cause is None or _retryable(cause)
    if isinstance(err, (NoCredentialsError, PartialCredentialsError, ParamValidationError)):
        return False
    return isinstance(err, (BotoCoreError, ConnectionError, TimeoutError))


def _backoff(attempt: int) -> float:
    """Capped exponential backoff with jitter: half the step fixed, half random."""
    step = min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2 ** (attempt - 1))
    return step / 2 + random.uniform(0, step / 2)


def _client_error_text(err, uri: str) -> str:
    """botocore's error code and message, with what a missing bucket means."""
    error = err.response.get("Error", {})
    code, message = error.get("Code", "?"), error.get("Message", "")
    if code == "NoSuchBucket":
        return f"S3 error {code}: bucket {_split(uri)[0]!r} does not exist (create it, or check the URI)"
    return f"S3 error {code}: {message}" if message else f"S3 error {code}"


class S3Storage(Storage):
    def _call(self, what: str, uri: str, fn, *args, **kwargs):
        """fn(*args, **kwargs), retried through failures worth retrying for GLYPH_S3_RETRY_SECONDS."""
        started, attempt = time.monotonic(), 0
        budget = _retry_seconds()
        while True:
            attempt += 1
            try:
                return fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - sorted into retryable or not, then raised as StorageError
                wait = _backoff(attempt)
                if not _retryable(err) or time.monotonic() - started + wait > budget:
                    raise self._error(what, uri, err, attempt, time.monotonic() - started) from None
                time.sleep(wait)

    @staticmethod
    def _error(what: str, uri: str, err: Exception, attempts: int, seconds: float) -> StorageError:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

        tried = f" ({attempts} attempts over {seconds:.0f} s)" if attempts > 1 else ""
        if isinstance(err, ClientError):
            return StorageError(f"{what} {uri} failed{tried}: {_client_error_text(err, uri)}",
                                code=err.response.get("Error", {}).get("Code"))
        if isinstance(err, (NoCredentialsError, PartialCredentialsError)):
            return StorageError(f"{what} {uri} failed: {err} (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                                "or AWS_PROFILE)")
        if isinstance(err, S3UploadFailedError):
            # boto3 aborts a failed multipart upload, so nothing half-written becomes visible.
            cause = err.__context__
            if isinstance(cause, ClientError):
                return StorageError(f"{what} {uri} failed{tried}: {_client_error_text(cause, uri)}",
                                    code=cause.response.get("Error", {}).get("Code"))
            text = f"{type(cause).__name__}: {cause}" if cause is not None else str(err)
            return StorageError(f"{what} {uri} failed{tried}: {text}")
        return StorageError(f"{what} {uri} failed{tried}: {type(err).__name__}: {err}")

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

    def _conditional(self, what: str, uri: str, fn, **kwargs) -> dict | None:
        """A conditional request: S3's answer, or None if its precondition failed (or the object is gone)."""
        try:
            return self._call(what, uri, fn, **kwargs)
        except StorageError as err:
            if err.code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409", "NoSuchKey", "404"):
                return None
            raise

    def create_exclusive(self, uri: str, data: bytes) -> str | None:
        bucket, key = _split(uri)
        answer = self._conditional("create", uri, _client().put_object, Bucket=bucket, Key=key, Body=data,
                                   IfNoneMatch="*")
        return answer and answer["ETag"]

    def read_versioned(self, uri: str) -> tuple[bytes, str] | None:
        bucket, key = _split(uri)
        try:
            answer = self._call("read", uri, _client().get_object, Bucket=bucket, Key=key)
        except StorageError as err:
            if err.code in ("NoSuchKey", "404"):
                return None
            raise
        return self._call("read", uri, answer["Body"].read), answer["ETag"]

    def replace_if(self, uri: str, data: bytes, version: str) -> str | None:
        bucket, key = _split(uri)
        answer = self._conditional("replace", uri, _client().put_object, Bucket=bucket, Key=key, Body=data,
                                   IfMatch=version)
        return answer and answer["ETag"]

    def delete_if(self, uri: str, version: str) -> bool:
        bucket, key = _split(uri)
        return self._conditional("delete", uri, _client().delete_object, Bucket=bucket, Key=key,
                                 IfMatch=version) is not None

    def abort_stale_uploads(self, prefix: str, started_before: float) -> list[str]:
        """Abort the unfinished multipart uploads under prefix begun before `started_before` (epoch seconds):
        a killed run's, which S3 would otherwise keep (and bill) forever. Returns their keys."""
        bucket, key = _split(prefix)
        if key and not key.endswith("/"):
            key += "/"
        client = _client()
        pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=key)
        aborted = []
        for page in self._call("list uploads", prefix, list, pages):
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() < started_before:
                    uri = f"s3://{bucket}/{upload['Key']}"
                    self._call("abort upload", uri, client.abort_multipart_upload, Bucket=bucket,
                               Key=upload["Key"], UploadId=upload["UploadId"])
                    aborted.append(uri)
        return aborted


def file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def list_uris(prefix: str) -> list[ObjectInfo]:
    return list(get_storage(prefix).list(prefix))

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

CORPUS = Path(__file__).resolve().parent.parent / "data" / "sample" / "sample.jsonl"


@pytest.fixture(scope="session")
def sample_docs() -> dict[str, str]:
    import json

    with CORPUS.open(encoding="utf-8") as handle:
        return {item["id"]: item["text"] for item in map(json.loads, handle)}


class S3Service:
    def __init__(self, proxy, bucket: str):
        self.proxy, self.bucket = proxy, bucket

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def client(self):
        import boto3

        return boto3.client("s3")


@pytest.fixture(scope="session")
def s3():
    """moto's S3 server on 127.0.0.1 behind a fault proxy; AWS_* variables point boto3 at it."""
    import logging

    from moto.server import ThreadedMotoServer

    from tests.support.s3 import FaultProxy, free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    proxy = FaultProxy(port)
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "test-access-key", "AWS_SECRET_ACCESS_KEY": "test-secret-do-not-log",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}",
        "GLYPH_S3_RETRY_SECONDS": "6",  # the default, 90 s, is for production outages
    })
    service = S3Service(proxy, "glyph-test")
    service.client().create_bucket(Bucket=service.bucket)
    yield service
    proxy.close()
    server.stop()


@pytest.fixture(scope="session")
def dask_client(s3):
    """A real Dask LocalCluster with 2 worker processes (started after the S3 variables are set)."""
    from pipeline.corpus.render_corpus import make_client

    client = make_client(workers=2)
    yield client
    cluster = client.cluster
    client.close()
    cluster.close()

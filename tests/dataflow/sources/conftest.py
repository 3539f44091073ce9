"""Fixtures of the source tests: a real S3 endpoint (moto's server on 127.0.0.1)
and a helper that runs read tasks in-process the way a worker does."""

from __future__ import annotations

import uuid

import cloudpickle
import pyarrow as pa
import pytest

from dataflow.sources.datasource import Datasource


def _run_tasks(source: Datasource, parallelism: int = 4, **pushdown) -> list[list[pa.Table]]:
    """Plan ``source`` and run each task after a pickle round trip (as a worker
    would); the blocks of each task, in task order."""
    out = []
    for task in source.iter_read_tasks(parallelism, **pushdown):
        task = cloudpickle.loads(cloudpickle.dumps(task))
        out.append(list(task()))
    return out


def _read_all(source: Datasource, parallelism: int = 4, **pushdown) -> pa.Table:
    """Every row the source yields, as one table."""
    blocks = [b for task in _run_tasks(source, parallelism, **pushdown) for b in task]
    return pa.concat_tables(blocks, promote_options="permissive")


@pytest.fixture
def run_tasks():
    return _run_tasks


@pytest.fixture
def read_all():
    return _read_all


@pytest.fixture(scope="session")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """``(s3fs filesystem, fresh bucket name)`` against the local endpoint."""
    import s3fs

    for var, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
    }.items():
        monkeypatch.setenv(var, value)
    fs = s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        client_kwargs={"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
        use_listings_cache=False,
        skip_instance_cache=True,
    )
    import boto3

    bucket = f"bucket-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    client.close()
    return fs, bucket

"""The local S3-compatible endpoint: Delta tables on `s3a://` on one machine, without a cloud account.

`lambdarec s3 start` (and the tests) run moto's S3 server (PyPI `moto`) on a free loopback port as a
background service of the data directory (pid and log under `<data_dir>/run`, its endpoint in
`<data_dir>/run/s3.endpoint`), create the bucket of the tables, and print the settings that put the
tables there. It keeps objects in memory: stopping it drops the tables. It is for running the s3a://
path of every job here; production points the same settings at S3 or MinIO.
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlparse

from feature_store.settings import Settings

SERVICE = "s3"
DEFAULT_TABLES_URI = "s3a://lambdarec/delta"
# moto checks no signature: these only give S3A and boto3 something to sign with. Local use only.
LOCAL_ACCESS_KEY = "lambdarec-local"
LOCAL_SECRET_KEY = "lambdarec-local"
LOCAL_REGION = "us-east-1"


def bucket_of(tables_uri: str) -> str:
    """`s3a://bucket/prefix` -> `bucket`."""
    parsed = urlparse(tables_uri)
    if parsed.scheme != "s3a" or not parsed.netloc:
        raise ValueError(f"not an s3a:// URI with a bucket: {tables_uri!r}")
    return parsed.netloc


def local_s3_environment(endpoint: str, tables_uri: str) -> dict[str, str]:
    """The LAMBDAREC_* settings that put the Delta tables at `tables_uri` on the local endpoint."""
    return {
        "LAMBDAREC_TABLES_URI": tables_uri,
        "LAMBDAREC_S3_ENDPOINT": endpoint,
        "LAMBDAREC_S3_PATH_STYLE_ACCESS": "true",
        "LAMBDAREC_S3_REGION": LOCAL_REGION,
        "LAMBDAREC_S3_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
        "LAMBDAREC_S3_SECRET_ACCESS_KEY": LOCAL_SECRET_KEY,
    }


def endpoint_file(settings: Settings) -> Path:
    return settings.run_dir / f"{SERVICE}.endpoint"


def server_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "moto.server", "--host", host, "--port", str(port)]


def s3_client(endpoint: str):
    """A boto3 S3 client of the local endpoint (bucket set-up, tests' look at the objects)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=LOCAL_ACCESS_KEY,
        aws_secret_access_key=LOCAL_SECRET_KEY,
        region_name=LOCAL_REGION,
    )


def ensure_bucket(endpoint: str, bucket: str) -> None:
    client = s3_client(endpoint)
    if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=bucket)


def _answers(endpoint: str) -> bool:
    import socket

    parsed = urlparse(endpoint)
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=0.2):
            return True
    except OSError:
        return False


def start_local_s3(settings: Settings, bucket: str, timeout_s: float = 60.0) -> str:
    """Start the data directory's S3 endpoint (or find it running) with `bucket`; returns its URL."""
    from lambdarec.local_services import ServiceSpec, running_pid, start_service
    from lambdarec.redis_server import free_port

    if running_pid(settings.run_dir, SERVICE) is not None and endpoint_file(settings).exists():
        endpoint = endpoint_file(settings).read_text().strip()
    else:
        host, port = "127.0.0.1", free_port()
        endpoint = f"http://{host}:{port}"
        spec = ServiceSpec(name=SERVICE, command=server_command(host, port), port=port, host=host)
        start_service(spec, settings.run_dir, ready=lambda: _answers(endpoint), timeout_s=timeout_s)
        endpoint_file(settings).write_text(endpoint)
    ensure_bucket(endpoint, bucket)
    return endpoint


def stop_local_s3(settings: Settings) -> bool:
    """Stop the data directory's S3 endpoint (its objects go with it); False when none was running."""
    from lambdarec.local_services import stop_service

    endpoint_file(settings).unlink(missing_ok=True)
    return stop_service(SERVICE, settings.run_dir)

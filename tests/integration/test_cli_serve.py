"""The README's serving walk-through run as a person would: `lambdarec hash-api-key`, then `lambdarec
serve` as its own process with that digest, and the README's requests against it (a real redis-server
and an empty MLflow registry: no batch published, no champion yet)."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from typer.testing import CliRunner

from lambdarec.cli import build_app
from lambdarec.testing import settings_environment, start_server, stop_server, wait_ready

pytestmark = pytest.mark.integration

SECRET_DIGEST = "186ef76e9d6a723ecb570d4d9c287487d001e5d35f7ed4a313350a407950318e"  # sha256("my-secret")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_hash_api_key_prints_the_digest():
    result = CliRunner().invoke(build_app(), ["hash-api-key", "my-secret"])
    assert (result.exit_code, result.output) == (0, SECRET_DIGEST + "\n")


def test_serve_answers_the_readme_requests(serving_settings, redis_client, tmp_path):
    # redis_client flushes the run's shared Redis: no batch another test published is live
    import os

    env = {
        **os.environ,
        **settings_environment(serving_settings),
        "LAMBDAREC_API_KEYS_SHA256": json.dumps([SECRET_DIGEST]),
    }
    port = free_port()
    server = start_server(env, port, tmp_path / "serve.log")
    try:
        ready = wait_ready(port, server, need_model=False)
        assert (ready["ready"], ready["redis"], ready["model"], ready["batch_version"]) == (
            True,
            True,
            None,
            None,
        ), ready
        base, key = f"http://127.0.0.1:{port}", {"X-API-Key": "my-secret"}
        assert httpx.get(f"{base}/v1/recommendations/u42?k=5&exclude=i7", timeout=10).status_code == 401
        recs = httpx.get(f"{base}/v1/recommendations/u42?k=5&exclude=i7", headers=key, timeout=10)
        assert (recs.status_code, recs.json()) == (
            200,
            {
                "user_id": "u42",
                "items": [],
                "batch_version": None,
                "model_version": None,
                "ranked_by": "priors",
                "degraded": False,
                "candidates": 0,
            },
        )
        event = {
            "event_id": "e-1",
            "user_id": "u42",
            "item_id": "i5",
            "event_type": "view",
            "ts": "2026-11-29T10:00:00Z",
            "context": {"category": "music"},
        }
        posted = httpx.post(f"{base}/v1/events", headers=key, json=event, timeout=10)
        assert (posted.status_code, posted.json()["accepted"], len(posted.json()["entry_ids"])) == (
            202,
            1,
            1,
        ), posted.text
        similar = httpx.get(f"{base}/v1/items/i5/similar?k=3", headers=key, timeout=10)
        assert (similar.status_code, similar.json()) == (
            200,
            {"item_id": "i5", "items": [], "batch_version": None, "degraded": False},
        )
        assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
    finally:
        stop_server(server)
    assert server.returncode == 0, (tmp_path / "serve.log").read_text()

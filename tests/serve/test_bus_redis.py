"""The Redis bus against a real redis-server: a consumer group shares the stream, a dead consumer's
events are claimed, and the service reads its own writes through Redis."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
from fastapi.testclient import TestClient

from journeymap.models import make_model
from tests.serve.conftest import auth, make_app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A throwaway redis-server on a free port (CI installs it with apt-get)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH: the Redis bus is tested against a real server "
                    "(apt-get install redis-server)")
    import redis

    port = _free_port()
    folder = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                               "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert server.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(timeout=10)


def _bus(url: str, prefix: str, **kwargs):
    from journeymap.serve._bus import RedisBus

    return RedisBus(f"{url}?prefix={prefix}", **kwargs)


def _events(n: int, users: int = 3) -> list[dict]:
    return [{"event_id": str(uuid.uuid4()), "user_id": f"user-{i % users}", "ts": _ts(i), "event_type": "page_view",
             "item_id": f"i{i}"} for i in range(n)]


def _ts(i: int):
    from datetime import datetime, timedelta

    return datetime(2024, 1, 6, 10) + timedelta(seconds=i)


def test_a_consumer_group_shares_the_stream(redis_url):
    producer = _bus(redis_url, "share")
    a, b = (_bus(redis_url, "share", consumer=name, batch=7) for name in ("a", "b"))
    a.ensure_group()
    producer.publish(_events(60))
    applied = {"a": 0, "b": 0}
    while sum(applied.values()) < 60:
        got_a, got_b = a.consume_once(), b.consume_once()
        assert got_a or got_b, "entries left unread"
        applied["a"] += got_a
        applied["b"] += got_b
    assert applied["a"] > 0 and applied["b"] > 0  # each event once, by one of them
    assert producer.r.xpending(producer.stream, producer.group)["pending"] == 0
    for u in range(3):
        user = f"user-{u}"
        assert producer.r.zcard(producer.online.events_key(user)) == 20
        assert producer.wait_applied(user, timeout=1)  # the producer's writes are all in the online state
    for bus in (producer, a, b):
        bus.close()


def test_a_dead_consumers_events_are_taken_over(redis_url):
    producer = _bus(redis_url, "claim")
    producer.ensure_group()
    producer.publish(_events(10, users=1))
    producer.r.xreadgroup(producer.group, "dead", {producer.stream: ">"}, count=100)  # read, never acknowledged
    assert producer.r.xpending(producer.stream, producer.group)["pending"] == 10
    heir = _bus(redis_url, "claim", consumer="heir", claim_idle_ms=0)
    assert heir.consume_once() == 0  # nothing new
    assert heir.claim() == 10
    assert producer.r.xpending(producer.stream, producer.group)["pending"] == 0
    assert producer.r.zcard(producer.online.events_key("user-0")) == 10
    producer.close()
    heir.close()


def test_the_service_reads_its_own_writes_through_redis(redis_url, store, tmp_path):
    """Predictions come from the online state in Redis, applied by the group's consumers (the service's
    own and a `journeymap serve-worker` process), and include every event the POST acknowledged."""
    path = make_model("markov").fit([["a", "b"], ["b", "c"], ["c", "d"]]).save(tmp_path / "m.npz")
    bus_url = f"{redis_url}?prefix=svc"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYMAP_")}
    worker = subprocess.Popen([sys.executable, "-m", "journeymap.cli", "serve-worker", "--bus", bus_url, "--name", "w2"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with TestClient(make_app(store, model_path=path, bus=bus_url, update_profiles=False)) as client:
            bus = client.app.state.service.bus
            items = ["a", "b", "c"]
            for n, item in enumerate(items):
                event = {"user_id": "r-1", "ts": f"2024-01-06 10:0{n}:00", "event_type": "product_view", "item_id": item}
                assert client.post("/v1/events", json=event, headers=auth("ingest")).status_code == 200
                got = client.get("/v1/users/r-1/predictions", params={"k": 1}, headers=auth("read"))
                assert got.headers["x-state-current"] == "true"
                assert got.json()["session"]["items"] == items[:n + 1]
                assert got.json()["next_items"][0]["item"] == {"a": "b", "b": "c", "c": "d"}[item]
            pseudonym = client.app.state.service.pseudonymize("r-1")
            assert bus.r.zcard(bus.online.events_key(pseudonym)) == 3
            deadline = time.monotonic() + 30
            while "w2" not in {c["name"] for c in bus.r.xinfo_consumers(bus.stream, bus.group)}:
                assert worker.poll() is None, worker.stderr.read().decode()
                assert time.monotonic() < deadline, "serve-worker did not join the group"
                time.sleep(0.05)
            assert bus.r.xpending(bus.stream, bus.group)["pending"] == 0
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=20)
        worker.stderr.close()
    assert worker.returncode == 0

"""An event acknowledged with 2xx survives the server being killed (SIGKILL) right after the reply."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
from fastapi.testclient import TestClient

from journeymap.store import Store
from tests.conftest import SECRET
from tests.serve.conftest import KEYS, auth, make_app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_acknowledged_events_survive_a_kill(store, tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEYMAP_")}
    env.update(JOURNEYMAP_SECRET=SECRET, JOURNEYMAP_API_KEYS=f"{KEYS['ingest']}:ingest")
    server = subprocess.Popen([sys.executable, "-m", "journeymap.cli", "serve", "--store", str(store), "--port",
                               str(port), "--log-level", "warning"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stderr.read().decode()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)

        acknowledged: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def send(worker: int) -> None:  # several clients at once: their requests share transactions
            with httpx.Client(base_url=base, headers=auth("ingest"), timeout=30) as http:
                for n in range(10_000):
                    if stop.is_set():
                        return
                    events = [{"user_id": f"k-{worker}", "ts": f"2024-01-06 10:{n // 60 % 60:02d}:{n % 60:02d}",
                               "event_type": "page_view", "item_id": f"{worker}-{n}-{i}"} for i in range(5)]
                    try:
                        response = http.post("/v1/events", json={"events": events})
                    except httpx.HTTPError:
                        return  # the server is gone
                    if response.status_code == 200:
                        with lock:
                            acknowledged.extend(r["event_id"] for r in response.json()["results"])

        senders = [threading.Thread(target=send, args=(w,)) for w in range(4)]
        for t in senders:
            t.start()
        while len(acknowledged) < 200 and server.poll() is None:
            time.sleep(0.005)
        server.send_signal(signal.SIGKILL)  # requests still in flight: only replies that arrived count
        server.wait(timeout=30)
        stop.set()
        for t in senders:
            t.join()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stderr.close()

    with lock:
        ids = set(acknowledged)
    assert len(ids) >= 200
    with Store(store, read_only=True) as st:
        stored = {str(r[0]) for r in st.con.execute("SELECT event_id FROM events WHERE user_id IN "
                                                    "(SELECT DISTINCT user_id FROM events WHERE item_id LIKE '%-%-%')")
                  .fetchall()}
        open_ingests = st.con.execute("SELECT count(*) FROM ingests WHERE finished_at IS NULL").fetchall()[0][0]
    assert ids <= stored
    assert open_ingests <= 1  # the killed run's live ingest, unless the profile updater had just sealed it

    # A restart finishes the killed run's ingest and carries on.
    with TestClient(make_app(store, update_profiles=False)) as client:
        assert client.get("/healthz").status_code == 200
        with client.app.state.service.reader() as con:
            assert con.execute("SELECT count(*) FROM ingests WHERE finished_at IS NULL").fetchall()[0][0] == 0

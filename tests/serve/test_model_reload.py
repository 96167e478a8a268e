"""A newer model file is served without a restart and without a failed request; a broken one is ignored."""

from __future__ import annotations

import threading
import time

from fastapi.testclient import TestClient

from journeymap.models import make_model
from tests.serve.conftest import auth, make_app


def test_a_replaced_model_file_is_picked_up_between_requests(store, tmp_path):
    path = tmp_path / "model.npz"
    make_model("markov").fit([["a", "b"], ["a", "b"], ["c", "z"]]).save(path)
    newer = make_model("markov").fit([["a", "z"], ["a", "z"], ["c", "b"]])
    with TestClient(make_app(store, model_path=path, model_poll_seconds=0.05, update_profiles=False)) as client:
        event = {"user_id": "m-1", "ts": "2024-01-06 10:00:00", "event_type": "product_view", "item_id": "a"}
        client.post("/v1/events", json=event, headers=auth("ingest"))
        seen: list[tuple[int, int, str | None]] = []
        stop = threading.Event()

        def ask() -> None:  # requests keep coming while the file is replaced
            while not stop.is_set():
                r = client.get("/v1/users/m-1/predictions", params={"k": 1}, headers=auth("read"))
                body = r.json() if r.status_code == 200 else {}
                seen.append((r.status_code, body.get("model", {}).get("version"),
                             (body.get("next_items") or [{}])[0].get("item")))

        asker = threading.Thread(target=ask)
        asker.start()
        try:
            while not seen:
                time.sleep(0.01)
            newer.save(path)  # written whole, then moved into place: what `journeymap train --out` does
            deadline = time.monotonic() + 15
            while not any(version == 2 for _, version, _ in seen) and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.1)
        finally:
            stop.set()
            asker.join()
        assert all(status == 200 for status, _, _ in seen)
        assert {(version, item) for _, version, item in seen} == {(1, "b"), (2, "z")}
        versions = [version for _, version, _ in seen]
        assert versions == sorted(versions)  # never back to the old model

        path.write_bytes(b"half a file")  # a broken copy: the last good model keeps serving
        deadline = time.monotonic() + 10
        while client.app.state.service.model.error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        after = client.get("/v1/users/m-1/predictions", params={"k": 1}, headers=auth("read")).json()
        assert (after["model"]["version"], after["next_items"][0]["item"]) == (2, "z")
        assert after["model"]["error"].startswith("FormatError: ")
        assert 'journeymap_model_load_errors_total 1\n' in client.get("/metrics", headers=auth("read")).text

"""``GET /v1/users/{id}/profile`` and ``/predictions``, and the profile updater behind them.

``{id}`` is the shop's own user id, pseudonymized here with the configured secret. A profile is
the row ``update_profiles`` keeps in the store, which equals a batch rebuild; the updater runs it
in the background after new events, at most every ``refresh_seconds`` (each run derives every
user). A user with events newer than the last run gets a live profile instead, computed from the
store on the read (``profiles._live``): the fields of the user alone as a rebuild would give them
now, the population-fitted ones (RFM quintiles, lifetime value, segment) from the last run.
Predictions read the online state (the user's latest events), which every accepted event reaches
before its request returns.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse, Response

from journeymap.config import Settings
from journeymap.serve._auth import Read
from journeymap.serve._metrics import Metrics
from journeymap.serve._online import predict, session_state
from journeymap.serve._service import NoProfiles, ServiceDep

if TYPE_CHECKING:
    from journeymap.serve._events import EventWriter

log = logging.getLogger("journeymap.serve")


class ProfileUpdater:
    """Runs ``update_profiles`` after new events, one run at a time, each covering all writes before it.

    Writes are numbered; a run starts by sealing the live ingest (so ``update_profiles`` knows
    which events are new), and when it ends every write numbered up to its start is covered.
    """

    def __init__(self, store_path: Path, settings: Settings, writer: EventWriter, metrics: Metrics,
                 refresh_seconds: float = 30.0) -> None:
        self.store_path = store_path
        self.refresh_seconds = refresh_seconds
        self.settings = settings
        self.writer = writer
        self.metrics = metrics
        self.written = 0  # writes with new events so far
        self.covered = 0  # writes whose events the profiles include
        self.last_error: str | None = None
        self.last_run: dict[str, Any] | None = None
        self._users: OrderedDict[str, int] = OrderedDict()  # user -> their latest write's number
        self._floor = 0  # the write every read waits for (the update at start)
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    def start(self, stale: bool) -> None:
        """Start the updater thread; ``stale``: the store has events the profiles may not cover yet."""
        if stale:  # every read waits for this first update: it may be the first build
            self.mark(())
            self._floor = self.written
        self._thread = threading.Thread(target=self._run, name="journeymap-profiles", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after one last update if writes are pending, so the store's profiles cover every event."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def mark(self, users: Iterable[str]) -> None:
        """Note a committed write with new events of ``users``."""
        with self._cond:
            self.written += 1
            for user in users:
                self._users[user] = self.written
                self._users.move_to_end(user)
            while len(self._users) > 500_000:  # an evicted user's write is long covered
                self._users.popitem(last=False)
            self._cond.notify_all()

    def pending(self, user: str) -> bool:
        """Whether the user has written events the stored profiles do not cover yet."""
        with self._cond:
            return self._users.get(user, 0) > self.covered

    def wait_ready(self, timeout: float) -> bool:
        """Wait for the update at start (it may be the first build); False if ``timeout`` passed first."""
        return self._wait(self._floor, timeout)

    def wait_for(self, user: str, timeout: float) -> bool:
        """Wait until the stored profiles cover the user's latest write; False if ``timeout`` passed first."""
        with self._cond:
            target = max(self._users.get(user, 0), self._floor)
        return self._wait(target, timeout)

    def _wait(self, target: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.covered < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop or self.last_error is not None:  # a failing update: do not wait on it
                    return False
                self._cond.wait(left)
            return True

    def lag(self) -> int:
        return self.written - self.covered

    def _run(self) -> None:
        from journeymap.profiles import update_profiles

        last_start = -float("inf")
        while True:
            with self._cond:
                while True:
                    if self._stop:
                        break
                    if self.covered < self.written:
                        # The first update (the floor) runs at once; later ones at most every refresh_seconds.
                        wait = 0.0 if self.covered < self._floor else last_start + self.refresh_seconds - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._stop and (self.covered >= self.written or self.last_error is not None):
                    return
                target = self.written
            last_start = time.monotonic()
            started = time.perf_counter()
            try:
                self.writer.seal()
                result = update_profiles(self.store_path, settings=self.settings)
            except Exception as exc:  # noqa: BLE001 - reported, and retried with the next write
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.inc("journeymap_profile_update_errors_total")
                log.warning("profile update failed (%s); retrying after the next events", self.last_error)
                with self._cond:  # wait for new writes (or a minute) before trying again
                    self._cond.wait_for(lambda: self.written > target or self._stop, timeout=60)
                continue
            seconds = time.perf_counter() - started
            self.metrics.inc("journeymap_profile_updates_total")
            self.metrics.observe("journeymap_profile_update_duration_seconds", seconds)
            self.last_error = None
            self.last_run = {"as_of": result.as_of.isoformat(sep=" "), "mode": result.mode,
                             "recomputed": result.recomputed, "users": result.user_count, "seconds": round(seconds, 3)}
            with self._cond:
                self.covered = max(self.covered, target)
                self._cond.notify_all()


# -- routes ------------------------------------------------------------------------------------

router = APIRouter(tags=["users"])


@router.get("/v1/users/{user_id}/profile")
def get_profile(user_id: str, _: Read, service: ServiceDep) -> Response:
    """One user's profile (the JSON of `journeymap profile --json`), including their live events."""
    user = service.pseudonymize(user_id)
    current = service.profiles.wait_ready(service.profile_wait) if service.profiles else True
    try:
        data, has_events, live = service.profile(user)
    except NoProfiles as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from None
    who = f"raw id '{user_id}' (pseudonym {user})"
    if data is None:
        if has_events:
            raise HTTPException(503, f"The user with {who} has events but no profile yet; the service is updating "
                                     "the profiles. Try again shortly.", headers={"Retry-After": "1"})
        raise HTTPException(404, f"No user with {who} in {service.store_path}.")
    # The CLI's own serialisation (print_json), so the JSON is the same, value for value.
    headers = {"X-Profile-As-Of": str(data["as_of"]), "X-Profile-Current": "true" if current else "false",
               "X-Profile-Source": "live" if live else "stored"}
    return Response(json.dumps(data, default=str), media_type="application/json", headers=headers)


@router.get("/v1/users/{user_id}/predictions")
def get_predictions(user_id: str, _: Read, service: ServiceDep,
                    k: Annotated[int, Query(ge=1, le=1000, description="How many next items.")] = 20) -> JSONResponse:
    """What the user does next by the live model, from their events so far and current session."""
    live = service.model
    current = live.current if live is not None else None
    if current is None:
        raise HTTPException(503, "No model is loaded; start the service with --model PATH (train one with "
                                 "`journeymap train`).")
    model = current[0]
    user = service.pseudonymize(user_id)
    current_state = service.bus.wait_applied(user, service.profile_wait)
    events = service.recent_events(user)
    gap = service.settings.session_gap
    result = predict(model, events, k, gap)
    body = {"user": user, "model": live.describe(current), "session": session_state(events, gap),
            "recent_events": len(events), **result}
    return JSONResponse(_plain(body), headers={"X-State-Current": "true" if current_state else "false"})


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as JSON values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and value != value:
        return None
    return value

"""``journeymap serve``: the live service over a store; ``journeymap serve-worker``: one more consumer of its Redis bus."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from journeymap.commands._options import ConfigOpt, StoreOpt, out


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("serve-worker")(serve_worker)


def serve(
    store: StoreOpt,
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Model checkpoint for predictions; a newer file is picked up while serving.")] = None,
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port.")] = 8000,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on (0.0.0.0 for all).")] = "127.0.0.1",
    bus: Annotated[str, typer.Option("--bus", help="memory (in-process) or redis://HOST:PORT (Redis Streams, online state in Redis).")] = "memory",
    demo: Annotated[bool, typer.Option("--demo", help="Use the demo secret (for stores made by `journeymap demo`).")] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    profile_refresh: Annotated[str, typer.Option("--profile-refresh", help="Bring the stored profiles up to date at most this often (each run derives every user); in between, users with new events get live profiles.")] = "30s",
    db_threads: Annotated[Optional[int], typer.Option("--db-threads", min=1, help="DuckDB threads for the store (default: every core but one, left to the requests).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the live service: events in, profiles, predictions, journeys and decisions out (API keys from JOURNEYMAP_API_KEYS)."""
    from journeymap.config import Settings
    from journeymap.exceptions import MissingDependencyError

    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError("journeymap serve needs uvicorn and FastAPI: pip install 'journeymap[serve]'.") from None
    from journeymap.serve import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from journeymap.config import parse_duration

    refresh = parse_duration(profile_refresh, "--profile-refresh").total_seconds()
    app = create_app(store, Settings.load(config), model_path=model, bus=bus, demo=demo,
                     profile_refresh_seconds=refresh, db_threads=db_threads)
    _preflight(store, app.state.settings.require_secret(), demo)
    out.print(f"serving {store} on http://{host}:{port} (docs at /docs, bus {bus})", highlight=False)
    # What exists now (the imported libraries above all) lives as long as the process: kept out of
    # the cyclic collector's full passes, which otherwise took 50-100 ms each under load.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), access_log=log_level.lower() == "debug")


def _preflight(store: Path, secret: str, demo: bool) -> None:
    """Say in one line, before uvicorn starts, what would stop the app: a store in use, another secret."""
    from journeymap.privacy import Pseudonymizer
    from journeymap.store import Store

    with Store(store) as st:
        st.con.begin()
        try:
            st.claim_secret(Pseudonymizer(secret).fingerprint(), demo)
        finally:
            st.con.rollback()


def serve_worker(
    bus: Annotated[str, typer.Option("--bus", help="The service's Redis bus: redis://HOST:PORT[?prefix=NAME].")],
    name: Annotated[Optional[str], typer.Option("--name", help="Consumer name in the group (default host:pid).")] = None,
) -> None:
    """Join the service's Redis consumer group and apply live events to the online state in Redis."""
    import signal
    import threading

    from journeymap.exceptions import JourneymapError
    from journeymap.serve._bus import RedisBus

    if not bus.startswith(("redis://", "rediss://")):
        raise JourneymapError(f"serve-worker consumes a Redis bus: --bus redis://HOST:PORT. Got '{bus}'.")
    worker = RedisBus(bus, consumer=name)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker.start()
    out.print(f"consuming {worker.stream} as {worker.consumer} in group {worker.group}", highlight=False)
    stop.wait()
    worker.close()

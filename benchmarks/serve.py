"""Load on ``journeymap serve``: fixed request rates for ingest and decisions, from 127.0.0.1.

    python benchmarks/serve.py                      # 100, 500 and 1000 req/s, 20 s each
    python benchmarks/serve.py --rates 500 --seconds 60

The server runs as its own process (``journeymap serve``, one uvicorn worker, the in-process bus)
on a fresh store; this script is the client, on the same machine. The load is open-loop: request
``i`` is due at ``start + i / rate`` whatever happened to earlier ones, and its latency counts from
that due time, so a server that falls behind shows it in the tail instead of slowing the client
down (the "coordinated omission" a closed-loop client would hide). Requests go over a pool of
keep-alive connections with a minimal HTTP/1.1 client written here, because a general client
(httpx) costs more CPU per request than the server's own work and would share the two cores.

Each phase sends realistic traffic from the live simulator: ``ingest`` posts one event per request
(a shop's tracker does), ``decisions`` asks for the next-best action among four actions with
features and context; ``healthz`` measures the web framework's own floor on this machine;
``profile`` posts an event and at once reads its user's profile, pair after pair, to time how soon
the profile shows the event (run it after ``ingest``, so that profiles exist). A phase's first
second is warm-up and not counted. The server's memory (RSS) is sampled every
second. Goal (issue 6): 500 req/s with p99 <= 20 ms and no errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path

import numpy as np
from _machine import machine  # benchmarks/ is the script's folder, so first on sys.path

from journeymap.simulator._live import ACTION_FEATURES, ACTIONS, LiveShop

OUT = Path(__file__).parent / "out" / "serve"
SECRET = "benchmark-secret"
API_KEY = "benchmark-key-0123456789"
WARMUP_S = 1.0


# -- traffic ---------------------------------------------------------------------------------------

def traffic(n_events: int, n_decisions: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    """Request bodies: single events in the order the simulated shop makes them, and decision
    requests at each session's first product view."""
    shop = LiveShop(seed=seed)
    events: list[bytes] = []
    decisions: list[bytes] = []
    actions = [{"id": a, "features": ACTION_FEATURES[a]} for a in ACTIONS]
    while len(events) < n_events or len(decisions) < n_decisions:
        session = shop.next_session()
        batch = list(session.opening)
        if session.decides:
            decisions.append(json.dumps({"user_id": session.user.raw_id, "actions": actions,
                                         "context": session.context, "ts": session.opening[-1]["ts"]}).encode())
            rest, _ = shop.finish(session, ACTIONS[len(decisions) % len(ACTIONS)])
            batch += rest
        events.extend(json.dumps(e).encode() for e in batch)
    return events[:n_events], decisions[:n_decisions]


# -- a minimal keep-alive HTTP/1.1 client -----------------------------------------------------------

class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body or b'')}\r\n\r\n").encode()
        self.writer.write(head + (body or b""))
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        length, close = 0, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        self.body = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return int(status_line.split()[1])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load(port: int, method: str, path: str, bodies: list[bytes | None], rate: float, seconds: float,
               connections: int) -> dict:
    """Send ``rate * seconds`` requests open-loop; latency from each request's due time."""
    n = int(rate * seconds)
    queue: asyncio.Queue = asyncio.Queue()
    latencies = np.full(n, np.nan)
    due_at = np.zeros(n)
    statuses: dict[str, int] = {}
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        conn = Connection(port)
        while True:
            i = await queue.get()
            if i is None:
                conn.close()
                return
            try:
                status = await conn.request(method, path, bodies[i % len(bodies)])
                key = str(status)
            except (OSError, asyncio.IncompleteReadError, ConnectionError) as exc:
                conn.close()
                key = type(exc).__name__
            latencies[i] = loop.time() - due_at[i]
            statuses[key] = statuses.get(key, 0) + 1

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    start = loop.time() + 0.05
    for i in range(n):
        due = start + i / rate
        due_at[i] = due
        wait = due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        queue.put_nowait(i)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = loop.time() - start
    counted = latencies[int(WARMUP_S * rate):]
    ok = sum(v for k, v in statuses.items() if k.startswith("2"))
    second = ((due_at - start) // 1).astype(int)  # where in the phase the tail is: p99 of each second
    by_second = [float(np.nanpercentile(latencies[second == k], 99) * 1000) for k in range(second.max(initial=-1) + 1)]
    return {"sent": n, "ok": ok, "errors": n - ok, "statuses": statuses, "elapsed": elapsed, "p99_by_second": by_second,
            "throughput": ok / elapsed, "p50_ms": float(np.nanpercentile(counted, 50) * 1000),
            "p99_ms": float(np.nanpercentile(counted, 99) * 1000), "max_ms": float(np.nanmax(counted) * 1000)}


async def reflect(port: int, events: list[bytes], seconds: float) -> dict:
    """POST one event, then at once GET its user's profile, pair after pair for ``seconds``: how
    long the profile read takes, and whether it already counts the event (its ``last_seen``)."""
    from datetime import datetime

    conn = Connection(port)
    loop = asyncio.get_running_loop()
    latencies, shown, errors = [], 0, 0
    stop = loop.time() + seconds
    for body in events:
        if loop.time() >= stop:
            break
        event = json.loads(body)
        if await conn.request("POST", "/v1/events", body) != 200:
            errors += 1
            continue
        started = loop.time()
        status = await conn.request("GET", f"/v1/users/{event['user_id']}/profile", None)
        latencies.append(loop.time() - started)
        if status != 200:
            errors += 1
            continue
        last_seen = json.loads(conn.body)["last_seen"]
        # the store keeps UTC without a zone; the tracker may send one
        sent = datetime.fromisoformat(event["ts"])
        sent = sent.astimezone(UTC).replace(tzinfo=None) if sent.tzinfo else sent
        shown += datetime.fromisoformat(last_seen) >= sent
    conn.close()
    ms = np.array(latencies) * 1000
    return {"pairs": len(latencies), "errors": errors, "shown": shown, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


# -- the server ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: per request, it shows the server's cost even when
    other work on the machine stretches the wall-clock times."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Server:
    def __init__(self, work: Path, extra: list[str]) -> None:
        self.work = work
        self.port = free_port()
        exe = Path(sys.executable).with_name("journeymap")
        env = {**os.environ, "JOURNEYMAP_SECRET": SECRET, "JOURNEYMAP_API_KEYS": f"{API_KEY}:admin"}
        self.log = open(work / "server.log", "w")
        self.proc = subprocess.Popen([str(exe), "serve", "--store", str(work / "shop.duckdb"), "--port",
                                      str(self.port), "--log-level", "warning", *extra], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"journeymap serve exited: {(work / 'server.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("journeymap serve did not start listening within 120 s")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def phase(server: Server, method: str, path: str, bodies: list, rate: float, seconds: float,
                connections: int) -> dict:
    memory: list[float] = []

    async def sample() -> None:
        while True:
            memory.append(rss_mb(server.proc.pid))
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample())
    cpu = cpu_seconds(server.proc.pid)
    own = time.process_time()
    try:
        result = await load(server.port, method, path, bodies, rate, seconds, connections)
    finally:
        sampler.cancel()
    result["cpu_ms"] = (cpu_seconds(server.proc.pid) - cpu) / result["sent"] * 1000
    result["client_cpu_ms"] = (time.process_time() - own) / result["sent"] * 1000
    memory.append(rss_mb(server.proc.pid))
    result["rss_mb"] = (memory[0], max(memory), memory[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="100,500,1000", help="requests per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections in the pool")
    parser.add_argument("--phases", default="healthz,ingest,decisions",
                        help="of healthz, ingest, decisions, profile (an event, then its user's profile)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile-refresh", default="30s", help="the server's --profile-refresh")
    parser.add_argument("--timeline", action="store_true", help="also print each phase's p99 per second (ms)")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    kinds = args.phases.split(",")

    print(f"machine: {machine('fastapi', 'uvicorn', 'duckdb', 'vowpalwabbit', load=True)}")
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    need = int(sum(rates) * args.seconds)
    n_events = (need if "ingest" in kinds else 0) + (int(args.seconds * 200) if "profile" in kinds else 0)
    events, decisions = traffic(n_events, need if "decisions" in kinds else 0, args.seed)
    print(f"traffic: {len(events):,} events, {len(decisions):,} decision requests "
          f"(events from the live simulator, one per request)\n")
    server = Server(OUT, ["--profile-refresh", args.profile_refresh])
    rows = []
    try:
        sent_events = sent_decisions = 0
        for kind in kinds:
            if kind == "profile":  # once, not per rate: pairs one after another
                r = asyncio.run(reflect(server.port, events[sent_events:], args.seconds))
                print(f"profile   POST an event, then GET its user's profile: {r['pairs']:,} pairs, errors {r['errors']}, "
                      f"event shown in {r['shown']:,}; profile read p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  "
                      f"max {r['max_ms']:.1f} ms", flush=True)
                continue
            for rate in rates:
                n = int(rate * args.seconds)
                if kind == "ingest":
                    method, path, bodies = "POST", "/v1/events", events[sent_events:sent_events + n]
                    sent_events += n
                elif kind == "decisions":
                    method, path, bodies = "POST", "/v1/decisions", decisions[sent_decisions:sent_decisions + n]
                    sent_decisions += n
                else:
                    method, path, bodies = "GET", "/healthz", [None]
                r = asyncio.run(phase(server, method, path, bodies, rate, args.seconds, args.connections))
                rows.append((kind, rate, r))
                print(f"{kind:9} {rate:6.0f}/s  sent {r['sent']:6,}  ok {r['ok']:6,}  errors {r['errors']:4}  "
                      f"throughput {r['throughput']:7.1f}/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
                      f"max {r['max_ms']:7.1f} ms  server CPU {r['cpu_ms']:.2f} ms/req  RSS {r['rss_mb'][0]:.0f}->{r['rss_mb'][2]:.0f} MB "
                      f"(peak {r['rss_mb'][1]:.0f})  client CPU {r['client_cpu_ms']:.2f} ms/req" + ("" if not r["errors"] else f"  {r['statuses']}"), flush=True)
                if args.timeline:
                    print("          p99 by second (ms): " + " ".join(f"{v:.0f}" for v in r["p99_by_second"]), flush=True)
    finally:
        server.stop()
    print("\n| phase | rate (req/s) | sent | errors | throughput (req/s) | p50 (ms) | p99 (ms) | max (ms) "
          "| server CPU (ms/req) | client CPU (ms/req) | server RSS start / peak / end (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for kind, rate, r in rows:
        print(f"| {kind} | {rate:.0f} | {r['sent']:,} | {r['errors']} | {r['throughput']:.1f} | {r['p50_ms']:.1f} "
              f"| {r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['cpu_ms']:.2f} | {r['client_cpu_ms']:.2f} | "
              f"{r['rss_mb'][0]:.0f} / {r['rss_mb'][1]:.0f} / "
              f"{r['rss_mb'][2]:.0f} |")
    print(f"\nload average after the run: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

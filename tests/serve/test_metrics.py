"""GET /metrics is valid Prometheus text and counts what happened."""

from __future__ import annotations

import importlib.util
import math
import re
from collections import defaultdict

from tests.serve.conftest import auth

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def parse(text: str) -> dict[str, dict]:
    """A strict reader of the text format (version 0.0.4): families with their type and samples."""
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            families.setdefault(name, {"samples": []})["help"] = line.split(" ", 3)[3]
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in TYPES and "type" not in families.get(name, {}), line
            families.setdefault(name, {"samples": []})["type"] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, labels, value = match.group(1), match.group(2) or "", match.group(3)
            family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in families else name
            assert family in families and "type" in families[family], f"{name} has no # TYPE before it"
            families[family]["samples"].append((name, dict(LABEL.findall(labels)), float(value)))
    return families


def check_histograms(families: dict[str, dict]) -> None:
    for name, family in families.items():
        if family["type"] != "histogram":
            continue
        series: dict[tuple, dict] = defaultdict(lambda: {"buckets": []})
        for sample, labels, value in family["samples"]:
            key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            if sample.endswith("_bucket"):
                series[key]["buckets"].append((float(labels["le"]), value))
            else:
                series[key][sample.rsplit("_", 1)[1]] = value
        for key, s in series.items():
            bounds = [b for b, _ in s["buckets"]]
            counts = [c for _, c in s["buckets"]]
            assert bounds == sorted(bounds) and bounds[-1] == math.inf, (name, key)
            assert counts == sorted(counts) and counts[-1] == s["count"], (name, key)


def value(families: dict, name: str, **labels: str) -> float:
    family = name if name in families else re.sub(r"_(bucket|sum|count)$", "", name)
    return sum(v for n, lab, v in families[family]["samples"] if n == name and labels.items() <= lab.items())


def test_metrics_parse_and_count_events_latency_and_errors(client):
    events = [{"user_id": "m", "ts": "2024-01-06 10:00:00", "event_type": "page_view"},
              {"user_id": "m", "ts": "2024-01-06 10:00:01", "event_type": "page_view"},
              {"user_id": "m", "ts": "never", "event_type": "page_view"}]
    client.post("/v1/events", json={"events": events}, headers=auth("ingest"))
    client.post("/v1/events", json=events[0], headers=auth("ingest"))
    client.get("/v1/users/m/predictions", headers=auth("read"))  # 503: no model
    if importlib.util.find_spec("journeymap.serve._decisions") is not None:
        client.post("/v1/decisions", json={"user_id": "m", "actions": ["a", "b"]}, headers=auth("decide"))
    response = client.get("/metrics", headers=auth("read"))
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = parse(response.text)
    check_histograms(families)
    assert value(families, "journeymap_events_accepted_total") == 2
    assert value(families, "journeymap_events_duplicate_total") == 1
    assert value(families, "journeymap_events_rejected_total", field="ts") == 1
    assert value(families, "journeymap_events_per_second") > 0
    assert value(families, "journeymap_http_requests_total", route="/v1/events", method="POST", status="200") == 2
    assert value(families, "journeymap_http_request_duration_seconds_count", route="/v1/events") == 2
    assert value(families, "journeymap_http_errors_total", route="/v1/users/{user_id}/predictions") == 1
    if importlib.util.find_spec("journeymap.serve._decisions") is not None:
        assert value(families, "journeymap_decision_duration_seconds_count") == 1
    assert families["journeymap_http_request_duration_seconds"]["type"] == "histogram"
    client.get("/no/such/path")
    assert 'route="other"' in client.get("/metrics", headers=auth("read")).text

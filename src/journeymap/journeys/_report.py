"""The journey report: one self-contained HTML file with every analysis, each with a sentence in numbers.

The chart library's JavaScript is embedded once, so the file opens offline (no CDN). Every
sentence is generated from the same result object as its chart; an analysis the data cannot
support (say, attribution on a log without channels) is listed with the reason instead.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from journeymap.config import Settings
from journeymap.exceptions import JourneymapError
from journeymap.journeys._base import Filters, Journeys

MAIN_FUNNEL = ("product_view", "add_to_cart", "begin_checkout", "purchase")


@dataclass
class Section:
    title: str
    sentence: str
    figure: Any = None  # a plotly Figure, or None when the analysis could not run
    data: dict[str, Any] = field(default_factory=dict)
    result: Any = None  # the analysis's result object, for callers who want more than the page


@dataclass
class Report:
    path: Path
    sections: list[Section]
    seconds: float

    def section(self, title: str) -> Section:
        return next(s for s in self.sections if s.title == title)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "seconds": round(self.seconds, 2),
                "sections": [{"title": s.title, "sentence": s.sentence, "available": s.figure is not None}
                             for s in self.sections]}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def build_report(store: str | Path, out: str | Path, settings: Settings | None = None,
                 filters: Filters | None = None, steps: list[str] | None = None,
                 progress: Callable[[str], None] | None = None) -> Report:
    """Run every analysis on the store and write the report to ``out``."""
    started = time.perf_counter()
    out = Path(out)
    sections: list[Section] = []
    with Journeys.open(store, settings, filters) as j:
        info = j.store.info(j.session_gap)
        if not info.events:
            raise JourneymapError(f"The store {store} holds no events; ingest some before writing a report.")
        present = set(info.event_types)
        steps = steps or [s for s in MAIN_FUNNEL if s in present]

        def run(title: str, build: Callable[[], Section]) -> None:
            if progress:
                progress(title)
            try:
                sections.append(build())
            except JourneymapError as exc:
                sections.append(Section(title, f"Not available for this data: {exc}"))

        sections.append(Section(
            "Overview",
            f"{info.events:,} events from {info.users:,} users in {info.sessions:,} sessions, "
            f"{info.first_ts} to {info.last_ts} (UTC); {info.quarantined:,} rows were quarantined at ingest.",
            data=info.to_dict()))
        run("Journey map", lambda: _graph_section(j))
        if len(steps) >= 2:
            run("Main funnel", lambda: _funnel_section(j, steps))
            run("Top paths", lambda: _paths_section(j, steps[0]))
            run("Drop-off drivers", lambda: _dropoff_section(j, steps[-2:]))
        else:
            sections.append(Section("Main funnel", "Not available for this data: fewer than two of "
                                    f"{', '.join(MAIN_FUNNEL)} occur in the store."))
        run("Attribution", lambda: _attribution_section(j, "purchase"))
        run("Retention", lambda: _retention_section(j))
        run("Personas", lambda: _personas_section(j))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text(_html(Path(store).name, sections), encoding="utf-8")
    tmp.replace(out)
    return Report(out, sections, time.perf_counter() - started)


def _graph_section(j: Journeys) -> Section:
    from journeymap.journeys._graph import transition_graph

    graph = transition_graph(j, by="event_type")
    data = graph.to_dict()
    edges = [e for e in data["edges"] if e["source"] != "session_start" and e["target"] != "session_end"]
    edges.sort(key=lambda e: -e["count"])
    top = ", ".join(f"{e['source']} → {e['target']} ({e['count']:,}, {_pct(e['probability'])} of "
                    f"{e['source']})" for e in edges[:3])
    ends = [e for e in data["edges"] if e["target"] == "session_end"]
    sentence = f"The most frequent moves are {top}."
    if ends:
        last = max(ends, key=lambda e: e["count"])
        sentence += (f" Of {data['sessions']:,} sessions, {last['count']:,} ({_pct(last['count'] / data['sessions'])}) "
                     f"end right after {last['source']}.")
    return Section("Journey map", sentence, graph.figure(), data)


def _funnel_section(j: Journeys, steps: list[str]) -> Section:
    from journeymap.journeys._funnel import funnel

    result = funnel(j, steps, window="1d", per="user")
    data = result.to_dict()
    parts = [f"{s['name']} {s['count']:,} ({_pct(s['rate_from_start'])})" for s in data["steps"][1:]]
    median = ((data.get("time_to_convert") or {}).get("percentiles") or {}).get("p50")
    sentence = (f"Of {data['entered']:,} users who did {steps[0]}, within a day: " + ", ".join(parts)
                + f"; {_pct(data['conversion_rate'])} converted, median {_duration(median)} from first to last step.")
    return Section("Main funnel", sentence, result.figure(), data)


def _paths_section(j: Journeys, start: str) -> Section:
    from journeymap.journeys._paths import paths

    result = paths(j, start=start, steps=4, top=10)
    data = result.to_dict()
    if not data["paths"]:
        raise JourneymapError(f"no session contains {start}")
    first = data["paths"][0]
    sentence = (f"From {start}, the most common next steps are {' → '.join(first['path'])} "
                f"({first['sessions']:,} sessions, {_pct(first['share'])}); "
                f"the top {len(data['paths'])} paths cover {_pct(sum(p['share'] for p in data['paths']))} "
                f"of {data['anchored_sessions']:,} sessions.")
    return Section("Top paths", sentence, result.figure(), data)


def _dropoff_section(j: Journeys, steps: list[str]) -> Section:
    from journeymap.journeys._dropoff import dropoff

    result = dropoff(j, steps=steps, at=steps[0])
    data = result.to_dict()
    sentence = (f"Of {data['reached']:,} sessions that reached {steps[0]}, {data['dropped']:,} did not go on to "
                f"{steps[1]} ({_pct(1 - data['conversion_rate'])}).")
    negative = data["drivers"]["negative"]
    if negative:
        d = negative[0]
        sentence += (f" The strongest driver of dropping is {d['feature']}: odds of converting x{d['odds_ratio']:.2f} "
                     f"(95% CI {d['ci_low']:.2f}–{d['ci_high']:.2f}, p={d['p_value']:.2g}).")
    positive = data["drivers"]["positive"]
    if positive:
        d = positive[0]
        sentence += f" The strongest positive one is {d['feature']} (x{d['odds_ratio']:.2f})."
    return Section("Drop-off drivers", sentence, result.figure(), data)


def _attribution_section(j: Journeys, conversion: str) -> Section:
    from journeymap.journeys._attribution import attribution

    result = attribution(j, model="markov", conversion=conversion, touchpoint="channel")
    data = result.to_dict()
    credits = sorted(data["credits"].items(), key=lambda kv: -kv[1])
    listed = ", ".join(f"{k} {v:,.0f} ({_pct(v / data['conversions'])})" for k, v in credits[:5])
    sentence = (f"Markov attribution (removal effect, order 1) of {data['conversions']:,} {conversion} "
                f"conversions by channel: {listed}.")
    return Section("Attribution", sentence, result.figure(), data)


def _retention_section(j: Journeys) -> Section:
    from journeymap.journeys._retention import retention

    result = retention(j, period="week", kind="first_time")
    data = result.to_dict()
    # Cohorts whose next period is observed (the last one's is not yet).
    cohorts = [c for c in data["cohorts"] if len(c["retained"]) > 1 and c["retained"][1] is not None and c["users"]]
    if not cohorts:
        raise JourneymapError("the log spans less than two weeks")
    users = sum(c["users"] for c in cohorts)
    back = sum(c["retained"][1] for c in cohorts)
    sentence = (f"Across {len(cohorts)} weekly cohorts ({users:,} new users), {_pct(back / users)} came back "
                "the week after their first visit.")
    return Section("Retention", sentence, result.figure(), data)


def _personas_section(j: Journeys) -> Section:
    from journeymap.journeys._personas import personas

    result = personas(j)
    data = result.to_dict()
    listed = "; ".join(f"{p['name']} ({_pct(p['share'])}, converts {_pct(p['conversion_rate'])})"
                       for p in data["personas"])
    sentence = f"{data['k']} personas (k chosen by {data['criterion']}): {listed}."
    return Section("Personas", sentence, result.figure(), data, result)


def _html(name: str, sections: list[Section]) -> str:
    from plotly.offline import get_plotlyjs

    body = []
    for s in sections:
        chart = (s.figure.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
                 if s.figure is not None else "")
        body.append(f"<section><h2>{html.escape(s.title)}</h2><p>{html.escape(s.sentence)}</p>{chart}</section>")
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>journeymap report: {html.escape(name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
section {{ border-top: 1px solid #ddd; padding: 1em 0; }}
p {{ font-size: 1.05em; line-height: 1.5; }}
</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>Customer journeys: {html.escape(name)}</h1>
<p>Written by journeymap on {stamp}. Every figure below comes from the store's events; user ids are pseudonyms.</p>
{''.join(body)}
</body></html>"""

"""The online session: the store's definition (given session ids, else a gap of inactivity)."""

from __future__ import annotations

from datetime import datetime, timedelta

from journeymap.serve._online import MemoryOnline, current_session, session_state

GAP = timedelta(minutes=30)


def _event(n: int, minute: int, session_id: str | None = None, item: str | None = None, kind: str = "page_view"):
    return {"event_id": f"e{n}", "user_id": "u", "ts": datetime(2024, 1, 1, 10) + timedelta(minutes=minute),
            "event_type": kind, "session_id": session_id, "item_id": item}


def test_a_session_runs_back_until_a_gap_longer_than_the_limit():
    # 20-minute steps never exceed the gap, though the session spans an hour; then a 31-minute hole.
    state = MemoryOnline()
    state.seed("u", [_event(0, 0), _event(1, 31, item="a"), _event(2, 51, item="b"), _event(3, 71),
                     _event(4, 91, item="c", kind="add_to_cart")])
    events = state.recent("u")
    assert [e["event_id"] for e in current_session(events, GAP)] == ["e1", "e2", "e3", "e4"]
    summary = session_state(events, GAP)
    assert (summary["events"], summary["items"], summary["carted"]) == (4, ["a", "b", "c"], ["c"])
    assert summary["started"] == "2024-01-01 10:31:00.000000"


def test_a_given_session_id_wins_over_gaps():
    events = MemoryOnline()
    events.seed("u", [_event(0, 0, "s1"), _event(1, 5, "s2"), _event(2, 200, "s2")])
    assert [e["event_id"] for e in current_session(events.recent("u"), GAP)] == ["e1", "e2"]


def test_memory_state_keeps_the_latest_events_and_evicts_the_least_recent_users():
    state = MemoryOnline(max_events=6, recent=4)
    state.seed("u", [_event(n, n) for n in range(8)])
    assert [e["event_id"] for e in state.recent("u")] == ["e4", "e5", "e6", "e7"]
    state.seed("v", [{**_event(n, n), "user_id": "v", "event_id": f"v{n}"} for n in range(10)])
    assert state.recent("u") is None  # evicted: read from the store again on next use

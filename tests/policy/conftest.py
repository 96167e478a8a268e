"""Decision logs with an obvious right answer, built in memory."""

from __future__ import annotations

import numpy as np

from journeymap.policy import from_records

ACTIONS = ("a", "b", "c")
CLICK_RATE = {"a": 0.2, "b": 0.5, "c": 0.8}  # the true mean reward of always taking each action


def uniform_records(n: int = 6000, seed: int = 1, pending: int = 0) -> list[dict]:
    """A uniform logging policy over three actions whose rewards are Bernoulli(CLICK_RATE[action]),
    whatever the context: a fixed-action policy's true value is its action's click rate."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        action = ACTIONS[rng.integers(3)]
        records.append({
            "decision_id": f"d{i}", "ts": f"2024-05-01T{i % 24:02d}:00:00Z", "user": f"u{i % 97}",
            "context": {"device": ["mobile", "desktop"][i % 2], "visits": int(rng.integers(0, 10))},
            "actions": list(ACTIONS), "action": action, "propensity": 1 / 3,
            "reward": None if i < pending else float(rng.random() < CLICK_RATE[action])})
    return records


def uniform_log(n: int = 6000, seed: int = 1, pending: int = 0):
    return from_records(uniform_records(n, seed, pending), source="synthetic")


FOUR = [  # hand-computed below: actions a/b, logging propensities 0.5 and 0.25
    {"decision_id": "1", "ts": "2024-05-01T10:00:00Z", "actions": ["a", "b"], "action": "a", "propensity": 0.5,
     "reward": 1},
    {"decision_id": "2", "ts": "2024-05-01T10:01:00Z", "actions": ["a", "b"], "action": "b", "propensity": 0.25,
     "reward": 0},
    {"decision_id": "3", "ts": "2024-05-01T10:02:00Z", "actions": ["a", "b"], "action": "b", "propensity": 0.5,
     "reward": 1},
    {"decision_id": "4", "ts": "2024-05-01T10:03:00Z", "actions": ["a", "b"], "action": "a", "propensity": 0.25,
     "reward": 1},
]

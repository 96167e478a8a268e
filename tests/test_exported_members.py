"""The packages' __all__ are honest: sorted, and every name in them resolves."""

import importlib

import pytest

PACKAGES = ("journeymap", "journeymap.events", "journeymap.journeys", "journeymap.store", "journeymap.items",
            "journeymap.profiles", "journeymap.models", "journeymap.evaluation", "journeymap.policy",
            "journeymap.serve")


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_resolves(name):
    module = importlib.import_module(name)
    assert list(module.__all__) == sorted(module.__all__), module.__name__
    for member in module.__all__:
        assert getattr(module, member) is not None, f"{module.__name__}.{member}"

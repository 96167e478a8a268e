"""The package's __all__ is honest: sorted, and every name in it resolves."""

import journeymap
import journeymap.events
import journeymap.journeys
import journeymap.store


def test_all_is_sorted_and_resolves():
    for module in (journeymap, journeymap.events, journeymap.journeys, journeymap.store):
        assert list(module.__all__) == sorted(module.__all__), module.__name__
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{module.__name__}.{name}"

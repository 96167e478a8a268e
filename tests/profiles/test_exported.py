"""journeymap.profiles' __all__ is honest: sorted, and every name in it resolves."""

import journeymap.profiles


def test_all_is_sorted_and_resolves():
    names = journeymap.profiles.__all__
    assert list(names) == sorted(names)
    for name in names:
        assert getattr(journeymap.profiles, name) is not None, name

"""journeymap.items says what is public: __all__ is sorted and every name in it resolves."""

import journeymap.items


def test_all_is_sorted_and_resolves():
    names = journeymap.items.__all__
    assert list(names) == sorted(names)
    for name in names:
        assert getattr(journeymap.items, name) is not None, name

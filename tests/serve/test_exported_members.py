"""journeymap.serve's __all__ is sorted and every name in it resolves (as tests/test_exported_members.py does for the rest)."""

import journeymap.serve


def test_all_is_sorted_and_resolves():
    assert list(journeymap.serve.__all__) == sorted(journeymap.serve.__all__)
    for member in journeymap.serve.__all__:
        assert getattr(journeymap.serve, member) is not None

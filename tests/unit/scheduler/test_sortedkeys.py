from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubenova.scheduler.sortedkeys import SortedInts

pytestmark = pytest.mark.unit


@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 3000)), max_size=3000), st.integers(0, 3000)
)
def test_behaves_like_a_sorted_set(ops: list[tuple[bool, int]], probe: int) -> None:
    s = SortedInts()
    ref: set[int] = set()
    for add, x in ops:
        if add and x not in ref:
            s.add(x)
            ref.add(x)
        elif not add and x in ref:
            s.remove(x)
            ref.discard(x)
    expected = sorted(ref)
    assert list(s) == expected
    assert len(s) == len(expected)
    assert list(s.iter_desc()) == expected[::-1]
    assert list(s.iter_from(probe)) == [x for x in expected if x >= probe]
    assert s.count_below(probe) == sum(1 for x in expected if x < probe)
    assert (probe in s) == (probe in ref)


def test_removing_a_missing_key_is_an_error() -> None:
    s = SortedInts()
    s.add(3)
    with pytest.raises(KeyError):
        s.remove(4)


def test_many_ascending_inserts_split_buckets_and_stay_sorted() -> None:
    s = SortedInts()
    for x in range(5000):
        s.add(x * 2)
    for x in range(0, 10000, 4):
        s.remove(x)
    assert list(s) == list(range(2, 10000, 4))

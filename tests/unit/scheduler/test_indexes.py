from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubenova.scheduler.indexes import LabelIndex
from kubenova.scheduler.model import Requirement, Selector, SelectorOp

pytestmark = pytest.mark.unit

KEYS = ["rack", "zone", "gpu", "pool"]
VALUES = ["a", "b", "c"]
labels_st = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=4)
requirement_st = st.builds(
    Requirement,
    st.sampled_from(KEYS),
    st.sampled_from(list(SelectorOp)),
    st.frozensets(st.sampled_from(VALUES), max_size=2),
)
selector_st = st.builds(
    Selector,
    st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(VALUES)), max_size=2).map(tuple),
    st.lists(requirement_st, max_size=3).map(tuple),
)


@given(st.lists(labels_st, max_size=40), selector_st, st.sets(st.integers(0, 39)))
def test_resolving_from_posting_lists_equals_matching_each_host(
    hosts: list[dict[str, str]], selector: Selector, removed: set[int]
) -> None:
    index = LabelIndex()
    for i, labels in enumerate(hosts):
        index.add(i, labels)
    for i in removed:
        if i < len(hosts):
            index.remove(i, hosts[i])
    live = [i for i in range(len(hosts)) if i not in removed]
    assert index.resolve(selector) == {i for i in live if selector.matches(hosts[i])}


def test_not_in_and_does_not_exist_select_hosts_without_the_label() -> None:
    index = LabelIndex()
    index.add(0, {"rack": "a"})
    index.add(1, {"rack": "b"})
    index.add(2, {})
    not_in = Selector((), (Requirement("rack", SelectorOp.NOT_IN, frozenset({"a"})),))
    absent = Selector((), (Requirement("rack", SelectorOp.DOES_NOT_EXIST),))
    assert index.resolve(not_in) == {1, 2}
    assert index.resolve(absent) == {2}
    assert index.resolve(Selector()) == {0, 1, 2}

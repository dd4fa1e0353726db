"""Indexes over hosts: the inverted label index (label → host ids) and the resolution of a
pool's selector by merging its posting lists. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from kubenova.scheduler.model import Selector, SelectorOp

K = TypeVar("K")


class LabelIndex:
    """Posting lists of host ids per (key, value) and per key."""

    __slots__ = ("all", "by_key", "by_pair")

    def __init__(self) -> None:
        self.by_pair: dict[tuple[str, str], set[int]] = {}
        self.by_key: dict[str, set[int]] = {}
        self.all: set[int] = set()

    def add(self, host_id: int, labels: Mapping[str, str]) -> None:
        self.all.add(host_id)
        for k, v in labels.items():
            self.by_pair.setdefault((k, v), set()).add(host_id)
            self.by_key.setdefault(k, set()).add(host_id)

    def remove(self, host_id: int, labels: Mapping[str, str]) -> None:
        self.all.discard(host_id)
        for k, v in labels.items():
            _discard(self.by_pair, (k, v), host_id)
            _discard(self.by_key, k, host_id)

    def resolve(self, selector: Selector) -> set[int]:
        """The ids of hosts whose labels match `selector`, from the posting lists alone."""
        positive: list[set[int]] = []
        negative: list[set[int]] = []
        empty: set[int] = set()
        for k, v in selector.match_labels:
            positive.append(self.by_pair.get((k, v), empty))
        for r in selector.expressions:
            if r.op is SelectorOp.EXISTS:
                positive.append(self.by_key.get(r.key, empty))
            elif r.op is SelectorOp.DOES_NOT_EXIST:
                negative.append(self.by_key.get(r.key, empty))
            else:
                union: set[int] = set()
                for v in r.values:
                    union |= self.by_pair.get((r.key, v), empty)
                (positive if r.op is SelectorOp.IN else negative).append(union)
        if positive:
            positive.sort(key=len)
            out = set(positive[0])
            for s in positive[1:]:
                out &= s
                if not out:
                    break
        else:
            out = set(self.all)
        for s in negative:
            out -= s
        return out


def _discard(index: dict[K, set[int]], key: K, host_id: int) -> None:
    s = index.get(key)
    if s is not None:
        s.discard(host_id)
        if not s:
            del index[key]

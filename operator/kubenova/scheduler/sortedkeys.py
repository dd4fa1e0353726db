"""`SortedInts`: a sorted multiset-free collection of ints with O(log n) insert, remove and
seek, in the bucketed style of `sortedcontainers` (a list of short sorted lists and their
maxima). The standard library has no balanced tree; a pure-Python red-black tree is slower
than this in CPython because it does far more attribute lookups per operation."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator

_LOAD = 256


class SortedInts:
    __slots__ = ("_buckets", "_len", "_maxes")

    def __init__(self) -> None:
        self._buckets: list[list[int]] = []
        self._maxes: list[int] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __contains__(self, x: int) -> bool:
        i = bisect_left(self._maxes, x)
        if i == len(self._maxes):
            return False
        b = self._buckets[i]
        j = bisect_left(b, x)
        return j < len(b) and b[j] == x

    def add(self, x: int) -> None:
        """Insert `x`, which must not be present."""
        maxes = self._maxes
        if not maxes:
            self._buckets.append([x])
            maxes.append(x)
            self._len = 1
            return
        i = bisect_left(maxes, x)
        if i == len(maxes):
            i -= 1
            b = self._buckets[i]
            b.append(x)
            maxes[i] = x
        else:
            b = self._buckets[i]
            insort(b, x)
        self._len += 1
        if len(b) > 2 * _LOAD:
            self._buckets[i : i + 1] = [b[:_LOAD], b[_LOAD:]]
            maxes[i : i + 1] = [b[_LOAD - 1], b[-1]]

    def remove(self, x: int) -> None:
        """Remove `x`; KeyError when absent."""
        maxes = self._maxes
        i = bisect_left(maxes, x)
        if i == len(maxes):
            raise KeyError(x)
        b = self._buckets[i]
        j = bisect_left(b, x)
        if j == len(b) or b[j] != x:
            raise KeyError(x)
        del b[j]
        self._len -= 1
        if not b:
            del self._buckets[i]
            del maxes[i]
            return
        maxes[i] = b[-1]
        if len(b) < _LOAD // 4 and len(self._buckets) > 1:
            # Merge a thin bucket into a neighbour so the bucket count stays ~ n / LOAD.
            k = i - 1 if i > 0 else i
            merged = self._buckets[k] + self._buckets[k + 1]
            if len(merged) > 2 * _LOAD:
                half = len(merged) // 2
                self._buckets[k : k + 2] = [merged[:half], merged[half:]]
                maxes[k : k + 2] = [merged[half - 1], merged[-1]]
            else:
                self._buckets[k : k + 2] = [merged]
                maxes[k : k + 2] = [merged[-1]]

    def count_below(self, x: int) -> int:
        """How many elements are < x."""
        i = bisect_left(self._maxes, x)
        n = sum(len(b) for b in self._buckets[:i])
        if i < len(self._buckets):
            n += bisect_left(self._buckets[i], x)
        return n

    def iter_from(self, x: int) -> Iterator[int]:
        """Ascending from the first element >= x. Do not mutate while iterating."""
        i = bisect_left(self._maxes, x)
        buckets = self._buckets
        if i == len(buckets):
            return
        b = buckets[i]
        yield from b[bisect_left(b, x) :]
        for k in range(i + 1, len(buckets)):
            yield from buckets[k]

    def iter_desc(self) -> Iterator[int]:
        """Descending from the largest element. Do not mutate while iterating."""
        for b in reversed(self._buckets):
            yield from reversed(b)

    def __iter__(self) -> Iterator[int]:
        for b in self._buckets:
            yield from b

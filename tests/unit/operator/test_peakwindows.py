from __future__ import annotations

import datetime as dt

import pytest

from kubenova.operator.peakwindows import inside

pytestmark = pytest.mark.unit


def at(hh: int, mm: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, 1, hh, mm, tzinfo=dt.UTC)


def test_no_windows_means_always() -> None:
    assert inside([], at(3))


def test_a_window_includes_its_start_not_its_end() -> None:
    w = [("09:00", "17:30")]
    assert [inside(w, at(h, m)) for h, m in ((8, 59), (9, 0), (17, 29), (17, 30))] == [
        False,
        True,
        True,
        False,
    ]


def test_a_window_may_cross_midnight() -> None:
    w = [("22:00", "02:00")]
    assert [inside(w, at(h)) for h in (21, 22, 0, 1, 2)] == [False, True, True, True, False]

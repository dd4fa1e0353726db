"""The index of which hosts hold which VMImage: O(changes) updates from Host reports."""

from __future__ import annotations

import pytest

from kubenova.operator.imageholders import ImageHolders

pytestmark = pytest.mark.unit

A, B = "a" * 64, "b" * 64


def test_a_report_names_only_the_images_whose_holders_changed() -> None:
    idx = ImageHolders()
    assert idx.update_host("h1", {"deb": A, "tiny": B}) == {"deb", "tiny"}
    assert idx.update_host("h1", {"deb": A, "tiny": B}) == set()
    assert idx.update_host("h2", {"deb": A}) == {"deb"}
    assert idx.holders("deb", A) == ["h1", "h2"]
    assert idx.update_host("h1", {"deb": A}) == {"tiny"}
    assert idx.holders("tiny", B) == []


def test_a_copy_with_another_checksum_is_not_held() -> None:
    idx = ImageHolders()
    idx.update_host("h1", {"deb": A})
    idx.update_host("h2", {"deb": B})
    assert idx.holders("deb", A) == ["h1"]
    assert idx.update_host("h2", {"deb": A}) == {"deb"}
    assert idx.holders("deb", A) == ["h1", "h2"]


def test_a_deleted_host_holds_nothing() -> None:
    idx = ImageHolders()
    idx.update_host("h1", {"deb": A, "tiny": B})
    assert idx.remove_host("h1") == {"deb", "tiny"}
    assert idx.holders("deb", A) == []
    assert idx.remove_host("h1") == set()

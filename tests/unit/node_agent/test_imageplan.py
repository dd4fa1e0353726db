"""The image cache's pure decisions: eviction, retry back-off, pool membership and booting
from cached files."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubenova.api.meta import LabelSelector
from kubenova.api.quantity import Quantity
from kubenova.api.vm import VMResources
from kubenova.node_agent import domain_xml, imageplan
from kubenova.node_agent.imageplan import CachedImage, plan_eviction
from tests.unit.node_agent.builders import make_vm

pytestmark = pytest.mark.unit


def img(name: str, size: int, used: float) -> CachedImage:
    return CachedImage(name, "a" * 64, size, used)


def test_no_limit_or_room_left_evicts_nothing() -> None:
    held = [img("a", 10, 1), img("b", 10, 2)]
    assert plan_eviction(held, set(), 0, 100).remove == ()
    assert plan_eviction(held, set(), 30, 10).remove == ()


def test_least_recently_used_unneeded_images_go_first() -> None:
    held = [img("old", 10, 1), img("older", 10, 0), img("new", 10, 5)]
    plan = plan_eviction(held, set(), 25, 0)
    assert plan == imageplan.Eviction(("older",), 0)
    plan = plan_eviction(held, {"older"}, 15, 0)
    assert plan.remove == ("old", "new")


def test_images_in_use_are_kept_even_over_the_limit() -> None:
    held = [img("a", 10, 1), img("b", 10, 2)]
    plan = plan_eviction(held, {"a", "b"}, 5, 0)
    assert plan == imageplan.Eviction((), 15)


@given(
    st.lists(st.tuples(st.integers(0, 100), st.integers(0, 50)), max_size=12),
    st.integers(1, 400),
    st.integers(0, 100),
    st.sets(st.integers(0, 11)),
)
def test_eviction_fits_the_limit_when_it_can_and_never_removes_a_needed_image(
    sizes: list[tuple[int, int]], limit: int, incoming: int, keep_idx: set[int]
) -> None:
    held = [img(f"i{i}", s, u) for i, (s, u) in enumerate(sizes)]
    keep = {f"i{i}" for i in keep_idx}
    plan = plan_eviction(held, keep, limit, incoming)
    assert not set(plan.remove) & keep
    left = sum(h.size for h in held if h.name not in plan.remove) + incoming
    assert plan.short == max(0, left - limit)
    kept_size = sum(h.size for h in held if h.name in keep) + incoming
    if kept_size <= limit:
        assert plan.short == 0


def test_retries_back_off_to_ten_minutes() -> None:
    assert [imageplan.retry_after(n) for n in (1, 2, 3)] == [10.0, 20.0, 40.0]
    assert imageplan.retry_after(30) == 600.0


def test_a_checksum_mismatch_names_both_checksums() -> None:
    text = imageplan.checksum_mismatch("a" * 64, "b" * 64, "http://x/y")
    assert text.startswith(f"checksum mismatch: expected {'a' * 64}, got {'b' * 64}")


@pytest.mark.parametrize(
    ("selector", "labels", "selected"),
    [
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"class": "gpu"}}, {"class": "gpu"}, True),
        ({"matchLabels": {"class": "gpu"}}, {"class": "general"}, False),
        ({"matchExpressions": [{"key": "z", "operator": "In", "values": ["1"]}]}, {"z": "1"}, True),
        ({"matchExpressions": [{"key": "z", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "z", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "z", "operator": "DoesNotExist"}]}, {"z": ""}, False),
    ],
)
def test_pool_membership_by_host_labels(
    selector: dict[str, object], labels: dict[str, str], selected: bool
) -> None:
    sel = LabelSelector.model_validate(selector)
    assert imageplan.selector_matches(sel, labels) is selected


SIZE = VMResources(vcpus=1, memory=Quantity("256Mi"), disk=Quantity("1Gi"))
SETTINGS = domain_xml.DomainSettings(domain_type="test", image_dir="/store")


def test_a_disk_vm_boots_from_the_cached_copy() -> None:
    spec, files = domain_xml.plan(make_vm(boot={"image": "deb"}), SIZE, SETTINGS)
    spec2, files2 = imageplan.use_cached(spec, files, {"disk": "/store/cache/deb/disk"})
    assert files2.base_image == "/store/cache/deb/disk"
    assert [f.path for f in files2.boot_files] == ["/store/cache/deb/disk"]
    assert [f.field for f in files2.boot_files] == ["spec.boot.image"]
    assert spec2 == spec  # the domain sees its overlay either way


def test_a_kernel_vm_boots_from_the_cached_pair() -> None:
    vm = make_vm(boot={"kernel": {"name": "tiny", "cmdline": "console=ttyS0"}})
    spec, files = domain_xml.plan(vm, SIZE, SETTINGS)
    cached = {"vmlinuz": "/store/cache/tiny/vmlinuz", "initrd": "/store/cache/tiny/initrd"}
    spec2, files2 = imageplan.use_cached(spec, files, cached)
    assert spec2.kernel is not None
    assert (spec2.kernel.kernel, spec2.kernel.initrd) == (cached["vmlinuz"], cached["initrd"])
    assert [f.path for f in files2.boot_files] == [cached["vmlinuz"], cached["initrd"]]
    assert "/store/cache/tiny/vmlinuz" in domain_xml.build(spec2)

"""Image locality (issue 16, item 3): hosts whose image cache holds the VM's base image are
preferred, by size held, scaled by the share of hosts that hold it, capped (kube-scheduler's
ImageLocality); the cache keeps the per-image host counts the score reads in O(1)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubenova.api import Host, VirtualMachine
from kubenova.scheduler import adapt, framework, model
from kubenova.scheduler.plugins import images
from kubenova.scheduler.plugins.base import CycleState
from tests.unit.scheduler.builders import make_host, make_pool, make_scheduler, make_vm

pytestmark = pytest.mark.unit

GIB = 1024


def holding(host: model.HostInfo, **held: int) -> model.HostInfo:
    """`host` with images in its cache, name → MiB."""
    return dataclasses.replace(host, images=dict(held))


def booting(image: str | None, name: str = "v") -> model.VMRequest:
    return dataclasses.replace(make_vm(name), image=image)


class TestScore:
    def test_below_the_minimum_scores_nothing_and_from_the_maximum_everything(self) -> None:
        assert images.locality(images.MIN_MIB, 1, 1) == 0.0
        assert images.locality(images.MAX_MIB, 1, 1) == 100.0
        assert images.locality(50 * GIB, 1, 1) == 100.0
        assert 0.0 < images.locality(500, 1, 1) < 100.0
        assert images.locality(0, 1, 1) == images.locality(500, 0, 10) == 0.0

    def test_an_image_few_hosts_hold_scores_less_than_one_most_hold(self) -> None:
        # kube-scheduler's guard against piling every VM of an image onto its only holder.
        assert images.locality(800, 1, 10) < images.locality(800, 9, 10)

    @given(
        size=st.integers(0, 1 << 24),
        more=st.integers(0, 1 << 20),
        holders=st.integers(0, 5000),
        hosts=st.integers(1, 5000),
    )
    def test_the_score_is_bounded_and_grows_with_size_and_share(
        self, size: int, more: int, holders: int, hosts: int
    ) -> None:
        s = images.locality(size, holders, hosts)
        assert 0.0 <= s <= 100.0
        assert images.locality(size + more, holders, hosts) >= s
        assert images.locality(size, min(holders + 1, hosts), hosts) >= s


class TestPlacement:
    @pytest.mark.parametrize("policy", ["pack", "spread"])
    def test_of_two_equal_hosts_the_vm_goes_to_the_one_holding_its_image(self, policy: str) -> None:
        weights = model.Weights(pack=1, spread=0) if policy == "pack" else model.Weights(0, 1)
        for seed in range(20):  # not the tie-break's luck
            hosts = [make_host("a"), holding(make_host("b"), debian=2 * GIB)]
            s = make_scheduler(hosts, [make_pool(weights=weights)], seed=seed)
            d = s.schedule(booting("debian"))
            assert isinstance(d, framework.Decision)
            assert d.host == "b"

    def test_without_an_image_or_with_weight_zero_the_cache_makes_no_difference(self) -> None:
        for vm, weights in (
            (booting(None), model.Weights()),
            (booting("debian"), model.Weights(image=0)),
        ):
            chosen = set()
            for seed in range(20):
                hosts = [make_host("a"), holding(make_host("b"), debian=2 * GIB)]
                s = make_scheduler(hosts, [make_pool(weights=weights)], seed=seed)
                d = s.schedule(vm)
                assert isinstance(d, framework.Decision)
                chosen.add(d.host)
            assert chosen == {"a", "b"}, "a tie, broken at random"

    def test_a_holder_without_room_is_not_chosen(self) -> None:
        hosts = [make_host("a"), holding(make_host("b", mem_gib=2), debian=2 * GIB)]
        d = make_scheduler(hosts, [make_pool()]).schedule(booting("debian"))
        assert isinstance(d, framework.Decision)
        assert d.host == "a"

    def test_locality_outweighs_packing_at_equal_weights_only_for_a_big_image(self) -> None:
        # Pack prefers the fuller host "a" (less free memory); "b" holds the image.
        def host_for(size_mib: int) -> str:
            hosts = [make_host("a", mem_gib=64), holding(make_host("b"), debian=size_mib)]
            d = make_scheduler(hosts, [make_pool()]).schedule(booting("debian"))
            assert isinstance(d, framework.Decision)
            return d.host

        assert host_for(10) == "a", "a tiny image saves too little to count"
        assert host_for(4 * GIB) == "b"

    def test_the_score_reads_only_the_host_and_two_counters(self) -> None:
        s = make_scheduler(
            [holding(make_host(f"h{i}"), debian=GIB) for i in range(3)] + [make_host("x")],
            [make_pool()],
        )
        state = s.prepare(booting("debian"))
        assert isinstance(state, CycleState)
        plugin = images.ImageLocality()
        held = plugin.score(state, s.cache.hosts["h0"])
        assert held == images.locality(GIB, 3, 4)
        assert plugin.score(state, s.cache.hosts["x"]) == 0.0


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["h1", "h2", "h3", "h4"]),
            st.one_of(
                st.none(),
                st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(1, 5000)),
            ),
        ),
        max_size=30,
    )
)
def test_the_cache_counts_the_holders_of_each_image_through_any_changes(
    steps: list[tuple[str, dict[str, int] | None]],
) -> None:
    """None removes the host; a dict upserts it holding those images."""
    s = make_scheduler([], [make_pool()])
    for name, held in steps:
        if held is None:
            s.cache.remove_host(name)
        else:
            s.cache.upsert_host(holding(make_host(name), **held))
        expected = Counter(i for e in s.cache.hosts.values() for i in e.info.images)
        assert s.cache.image_hosts == dict(expected)


def test_adapt_maps_host_images_to_mib_rounded_up_and_the_vms_boot_image() -> None:
    h = Host.parse({
        "apiVersion": "kubenova.io/v1alpha1", "kind": "Host", "metadata": {"name": "h"},
        "status": {
            "capacity": {"cpus": 8, "memory": "16Gi", "disk": "100Gi"},
            "images": [{"name": "debian-12", "size": 1}, {"name": "big", "size": 3 * 2**30}],
        },
    })  # fmt: skip
    assert adapt.host(h, 0.0).images == {"debian-12": 1, "big": 3 * GIB}
    v = VirtualMachine.parse({
        "apiVersion": "kubenova.io/v1alpha1", "kind": "VirtualMachine",
        "metadata": {"name": "v", "namespace": "n"},
        "spec": {"flavor": "f", "boot": {"image": "debian-12"},
                 "resources": {"vcpus": 1, "memory": "1Gi", "disk": "1Gi"}},
    })  # fmt: skip
    assert adapt.vm(v, None, 0.0).image == "debian-12"
    raw = v.to_dict()
    raw["spec"]["boot"] = {"kernel": {"name": "tiny"}}
    assert adapt.vm(VirtualMachine.parse(raw), None, 0.0).image is None

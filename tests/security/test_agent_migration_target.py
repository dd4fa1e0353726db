"""The source agent sends a VM only where the target host itself says it takes migrations:
the VM's migration annotations must equal the target Host's own status.migration (which only
the target's agent may write), in the one URI form that cannot make the source's libvirtd run
a command or open a file. Defence in depth behind the admission policies (a tenant cannot
write the annotations, an agent cannot offer another host's address). Pure."""

from __future__ import annotations

import pytest

from kubenova.node_agent.transfer import Offer, target_problem

pytestmark = pytest.mark.unit

TARGET = "h2"
OFFER = Offer("qemu+tcp://10.123.0.2/system", "10.123.0.2")


@pytest.mark.parametrize(
    ("uri", "address", "offer"),
    [
        ("qemu+tcp://10.123.0.2/system", "10.123.0.2", OFFER),  # tests/fixtures/libvirt_pair
        ("qemu+tls://h2:16514/system", "", Offer("qemu+tls://h2:16514/system", "")),
        ("qemu+ssh://h2/system", "10.0.0.2", Offer("qemu+ssh://h2/system", "10.0.0.2")),
    ],
)
def test_a_vm_goes_where_its_target_offers(uri: str, address: str, offer: Offer) -> None:
    assert target_problem(TARGET, uri, address, offer) is None


@pytest.mark.parametrize(
    ("uri", "address", "offer", "why"),
    [
        # Annotations rewritten to point elsewhere than the target's own offer.
        ("qemu+tcp://203.0.113.9/system", "203.0.113.9", OFFER, "are not what host h2 offers"),
        ("qemu+tcp://10.123.0.2/system", "203.0.113.9", OFFER, "are not what host h2 offers"),
        # An offer (or annotation) libvirt would turn into a command or a file on the source.
        (u := "qemu+ext:///system?command=/bin/sh", "", Offer(u, ""), "which is not"),
        (u := "qemu+tcp://h2/system?socket=/run/x", "", Offer(u, ""), "which is not"),
        (u := "qemu+ssh://root@h2/system?keyfile=/root/.ssh/id", "", Offer(u, ""), "which is not"),
        (u := "qemu+unix:///system", "", Offer(u, ""), "which is not"),
        # An offer naming a host other than the target and its address.
        (u := "qemu+tcp://h3/system", "10.123.0.2", Offer(u, "10.123.0.2"), "which is not"),
        ("qemu+tcp://h2/system", "", None, "host h2 does not exist"),
    ],
)
def test_a_vm_never_goes_anywhere_else(
    uri: str, address: str, offer: Offer | None, why: str
) -> None:
    problem = target_problem(TARGET, uri, address, offer)
    assert problem is not None and why in problem and "not migrating" in problem, problem

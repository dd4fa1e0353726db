"""Domains of VMs bound elsewhere go at once; domains arriving by migration are left alone;
what the agent reads back from a domain."""

from __future__ import annotations

import datetime as dt

import pytest

from kubenova.node_agent import domain_xml
from kubenova.node_agent.decide import scan_orphans
from tests.unit.node_agent.builders import NOW, make_domain

pytestmark = pytest.mark.unit


def test_a_domain_of_a_vm_bound_elsewhere_is_removed_without_a_grace() -> None:
    d = make_domain(uid="moved")
    scan = scan_orphans([d], set(), {}, NOW, 300.0, elsewhere=frozenset({"moved"}))
    assert scan.remove == (d.name,)


def test_a_domain_of_a_vm_in_migration_is_no_orphan() -> None:
    d = make_domain(uid="moving")
    later = NOW + dt.timedelta(hours=1)
    scan = scan_orphans([d], set(), {d.name: NOW}, later, 300.0, migrating=frozenset({"moving"}))
    assert (scan.new, scan.remove, scan.first_seen) == ((), (), {})


def test_an_unknown_orphan_still_waits_for_the_grace() -> None:
    d = make_domain(uid="gone")
    first = scan_orphans([d], set(), {}, NOW, 300.0)
    assert (first.new, first.remove) == ((d.name,), ())


def test_the_serial_log_path_is_read_from_the_domain() -> None:
    xml = (
        "<domain><devices><serial type='file'><source path='/var/lib/kubenova/d/a_b/serial.log'"
        " append='on'/></serial></devices></domain>"
    )
    assert domain_xml.read_serial_log(xml) == "/var/lib/kubenova/d/a_b/serial.log"
    assert domain_xml.read_serial_log("<domain><devices/></domain>") is None

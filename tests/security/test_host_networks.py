"""Networks (issue 13, item 5): a VM attaches only to host networks its ResourcePool lists,
never chooses its MAC, and every interface libvirt gets carries the clean-traffic filter.
Real control plane and webhooks; the domain XML defined in a real libvirt (test:///)."""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from kubenova.api.quantity import Quantity
from kubenova.api.vm import VirtualMachine, VMResources
from kubenova.node_agent import domain_xml
from tests.e2e.bind import vm
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.webhook import Webhook
from tests.security import hostkit
from tests.security.hostkit import flavor

__all__ = ["flavor"]  # a fixture used by name

pytestmark = pytest.mark.apiserver


@pytest.fixture
def pool(test_cluster: LocalCluster, wh_namespace: str, webhook: Webhook) -> Iterator[str]:
    """A pool dedicated to the test's namespace that allows the host network `default` only."""
    name = f"net-{uuid.uuid4().hex[:8]}"
    code, err = hostkit.apply(test_cluster, hostkit.pool_doc(name, ["default"], [wh_namespace]))
    assert code == 0, err
    wait_for("the pool", lambda: test_cluster.get("resourcepool", name))
    yield name
    test_cluster.kubectl("delete", "resourcepool", name, "--ignore-not-found", check=False)


def _nic(network: str, **extra: str) -> list[dict[str, str]]:
    return [{"name": "eth0", "network": network, **extra}]


def test_a_network_the_pool_does_not_list_is_refused_and_no_vm_is_created(
    test_cluster: LocalCluster, wh_namespace: str, flavor: str, pool: str
) -> None:
    doc = hostkit.vm_doc("mgmt", wh_namespace, flavor, pool=pool, networks=_nic("management"))
    code, err = hostkit.apply(test_cluster, doc)
    assert code != 0, "a network the pool does not list was admitted"
    assert (
        f"spec.networks[0].network: network 'management': pool '{pool}' allows only default"
    ) in err, err
    assert vm(test_cluster, wh_namespace, "mgmt") is None
    ok = hostkit.vm_doc("ok", wh_namespace, flavor, pool=pool, networks=_nic("default"))
    code, err = hostkit.apply(test_cluster, ok)
    assert code == 0, err


def test_a_pool_without_networks_admits_no_interface(
    test_cluster: LocalCluster, wh_namespace: str, flavor: str
) -> None:
    bare = f"bare-{uuid.uuid4().hex[:8]}"
    code, err = hostkit.apply(test_cluster, hostkit.pool_doc(bare, [], [wh_namespace]))
    assert code == 0, err
    try:
        wait_for("the pool", lambda: test_cluster.get("resourcepool", bare))
        doc = hostkit.vm_doc("any", wh_namespace, flavor, pool=bare, networks=_nic("default"))
        code, err = hostkit.apply(test_cluster, doc)
        assert code != 0
        assert f"pool '{bare}' allows no networks" in err, err
        assert vm(test_cluster, wh_namespace, "any") is None
    finally:
        test_cluster.kubectl("delete", "resourcepool", bare, "--ignore-not-found", check=False)


def test_adding_a_network_to_a_pending_vm_is_checked_too(
    test_cluster: LocalCluster, wh_namespace: str, flavor: str, pool: str
) -> None:
    code, err = hostkit.apply(
        test_cluster, hostkit.vm_doc("later", wh_namespace, flavor, pool=pool)
    )
    assert code == 0, err
    patch = {"spec": {"networks": _nic("management")}}
    proc = test_cluster.kubectl(
        "patch", "vm", "later", "-n", wh_namespace, "--type=merge", "-p", json.dumps(patch),
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0, "a network the pool does not list was patched in"
    assert "spec.networks[0].network: network 'management'" in proc.stderr, proc.stderr
    found = vm(test_cluster, wh_namespace, "later")
    assert found is not None and not found["spec"].get("networks"), "the VM is unchanged"


def test_a_mac_address_chosen_by_the_tenant_is_refused(
    test_cluster: LocalCluster, wh_namespace: str, flavor: str, pool: str
) -> None:
    # The MAC of another tenant's guest, to take over its traffic.
    nic = _nic("default", macAddress="02:de:ac:1e:6b:7a")
    doc = hostkit.vm_doc("spoof", wh_namespace, flavor, pool=pool, networks=nic)
    code, err = hostkit.apply(test_cluster, doc)
    assert code != 0, "a tenant's MAC address was admitted"
    assert "macAddress cannot be set: kubenova assigns each interface a stable MAC" in err, err
    assert vm(test_cluster, wh_namespace, "spoof") is None


@pytest.mark.libvirt
def test_libvirt_gets_kubenovas_mac_and_clean_traffic_on_every_interface(
    test_host: Path,
) -> None:
    """The builder's XML as libvirt keeps it after defining (the agent's own path)."""
    raw = hostkit.vm_doc("web", "team-a", "small", networks=[
        {"name": "eth0", "network": "default"}, {"name": "eth1", "network": "default"},
    ])  # fmt: skip
    raw["metadata"]["uid"] = str(uuid.uuid4())
    parsed = VirtualMachine.parse(raw)
    size = VMResources(vcpus=1, memory=Quantity("256Mi"), disk=Quantity("1Gi"))
    spec, _ = domain_xml.plan(parsed, size, domain_xml.DomainSettings(domain_type="test"))
    conn = libvirt.open(f"test://{test_host}")
    try:
        dom = conn.defineXML(domain_xml.build(spec))
        ifaces = ET.fromstring(dom.XMLDesc(0)).findall("devices/interface")
    finally:
        conn.close()
    assert [i.find("mac").get("address") for i in ifaces] == [  # type: ignore[union-attr]
        domain_xml.mac_address(raw["metadata"]["uid"], n) for n in ("eth0", "eth1")
    ]
    for iface in ifaces:
        ref = iface.find("filterref")
        assert ref is not None and ref.get("filter") == "clean-traffic"
        params = {p.get("name"): p.get("value") for p in ref.findall("parameter")}
        assert params == {"CTRL_IP_LEARNING": "dhcp"}

"""VM → domain XML, against golden files in tests/data/golden/. Regenerate them after an
intended change with KUBENOVA_UPDATE_GOLDEN=1 and review the diff."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest

from kubenova.api.flavor import FlavorSpec, HugePageSize
from kubenova.api.quantity import Quantity
from kubenova.api.vm import VirtualMachine, VMResources
from kubenova.node_agent import domain_xml
from kubenova.node_agent.domain_xml import DomainSettings
from tests.conftest import ROOT
from tests.unit.node_agent.builders import UID, make_vm

pytestmark = pytest.mark.unit

GOLDEN = ROOT / "tests" / "data" / "golden"
SMALL = VMResources(vcpus=2, memory=Quantity("1Gi"), disk=Quantity("10Gi"))
KVM = DomainSettings(domain_type="kvm", state_dir="/var/lib/kubenova/domains")
TCG = DomainSettings(domain_type="qemu", state_dir="/srv/kn")


def _tiny() -> VirtualMachine:
    return make_vm(
        "tiny-1",
        boot={
            "kernel": {
                "kernel": "/images/vmlinuz",
                "initrd": "/images/initrd.img",
                "cmdline": "console=ttyS0 quiet panic=-1",
            }
        },
    )


def _web() -> VirtualMachine:
    return make_vm(
        "web-1",
        annotations={"kubenova.io/trace-id": "abc123", "kubenova.io/restart-requested-at": "t1"},
        networks=[
            {"name": "eth0", "network": "default", "macAddress": "52:54:00:AA:BB:CC"},
            {"name": "eth1", "network": "storage", "model": "e1000"},
        ],
        cloudInit={"userData": "#cloud-config\npackages: [nginx]\n"},
        status={"gpuDevices": ["0000:3b:00.0"]},
    )


def _hostile() -> VirtualMachine:
    # Names are DNS labels, but boot paths, command lines and user data are free text.
    return make_vm(
        "evil",
        boot={
            "kernel": {
                "kernel": "/images/vm'linuz\"<x>",
                "cmdline": 'console=ttyS0 x="]]></cmdline><devices/>&amp; <!-- y',
            }
        },
    )


CASES = {
    "tiny-kernel-tcg": (_tiny, TCG, None),
    "web-image-cloudinit-gpu-kvm": (_web, KVM, FlavorSpec(vcpus=2, memory=Quantity("1Gi"),
                                                           huge_pages=HugePageSize.SIZE_1GI)),
    "hostile-strings": (_hostile, TCG, None),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_domain_xml_matches_its_golden_file(case: str) -> None:
    make, settings, flavor = CASES[case]
    spec, _storage = domain_xml.plan(make(), SMALL, settings, flavor)
    xml = domain_xml.build(spec) + "\n"
    golden = GOLDEN / f"domain-{case}.xml"
    if os.environ.get("KUBENOVA_UPDATE_GOLDEN"):
        golden.write_text(xml)
    assert xml == golden.read_text()


def test_user_text_survives_the_round_trip_unchanged() -> None:
    vm = _hostile()
    spec, _ = domain_xml.plan(vm, SMALL, TCG)
    root = ET.fromstring(domain_xml.build(spec))
    assert vm.spec.boot.kernel is not None
    assert root.findtext("os/cmdline") == vm.spec.boot.kernel.cmdline
    assert root.findtext("os/kernel") == vm.spec.boot.kernel.kernel
    assert root.find("devices/devices") is None, "user text must not become elements"


def test_the_owner_and_restart_token_are_read_back_from_the_metadata() -> None:
    spec, _ = domain_xml.plan(_web(), SMALL, KVM)
    owner, token = domain_xml.read_owner(domain_xml.build(spec))
    assert owner is not None
    assert (owner.namespace, owner.name, owner.uid) == ("team-a", "web-1", UID)
    assert token == "t1"


def test_a_domain_without_kubenova_metadata_has_no_owner() -> None:
    assert domain_xml.read_owner("<domain type='test'><name>x</name></domain>") == (None, None)


def test_storage_plan_names_overlay_seed_and_base_image() -> None:
    _spec, files = domain_xml.plan(_web(), SMALL, KVM)
    assert files.folder == "/var/lib/kubenova/domains/team-a_web-1"
    assert files.overlay == f"{files.folder}/root.qcow2"
    assert files.base_image == "/var/lib/kubenova/images/debian-12.qcow2"
    assert files.disk_bytes == 10 * 1024**3
    assert files.seed == f"{files.folder}/seed.iso"
    assert files.user_data == "#cloud-config\npackages: [nginx]\n"


def test_memory_is_rounded_up_to_whole_kib() -> None:
    odd = VMResources(vcpus=1, memory=Quantity("1000001"), disk=Quantity("1Gi"))
    spec, _ = domain_xml.plan(_tiny(), odd, TCG)
    assert spec.memory_kib == 977


def test_a_gpu_address_that_is_not_pci_is_refused_naming_the_field() -> None:
    vm = make_vm("gpu", status={"gpuDevices": ["nvidia0"]})
    spec, _ = domain_xml.plan(vm, SMALL, KVM)
    with pytest.raises(ValueError, match=r"status.gpuDevices: 'nvidia0'"):
        domain_xml.build(spec)

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
        boot={"kernel": {"name": "tiny-guest", "cmdline": "console=ttyS0 quiet panic=-1"}},
    )


def _web() -> VirtualMachine:
    return make_vm(
        "web-1",
        annotations={"kubenova.io/trace-id": "abc123", "kubenova.io/restart-requested-at": "t1"},
        networks=[
            {"name": "eth0", "network": "default"},
            {"name": "eth1", "network": "storage", "model": "e1000"},
        ],
        cloudInit={"userData": "#cloud-config\npackages: [nginx]\n"},
        status={"gpuDevices": ["0000:3b:00.0"]},
    )


def _hostile() -> VirtualMachine:
    # Names are plain names, but command lines, trace ids and user data are free text.
    return make_vm(
        "evil",
        annotations={"kubenova.io/trace-id": "'\"<x>&amp;"},
        boot={
            "kernel": {
                "name": "tiny",
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
    assert (
        root.findtext(
            "metadata/{https://kubenova.io/xmlns/vm/1}vm/{https://kubenova.io/xmlns/vm/1}traceId"
        )
        == "'\"<x>&amp;"
    )
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
    assert files.store == "/var/lib/kubenova/images"
    assert [(f.field, f.name, f.path) for f in files.boot_files] == [
        ("spec.boot.image", "debian-12.qcow2", files.base_image)
    ]
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


# -- boot sources are names in the image store, never paths --------------------------------


def _bypassing_the_schema(vm: VirtualMachine, **boot: object) -> VirtualMachine:
    """`vm` with boot fields the schema refuses, as in an object stored before the rule (or let
    through by a broken webhook): the agent must refuse it too."""
    target = vm.spec.boot.kernel if "cmdline" in boot or "name" in boot else vm.spec.boot
    assert target is not None
    target.__dict__.update(boot)
    return vm


@pytest.mark.parametrize(
    "image",
    ["../domains/team-b_db/root.qcow2", "/etc/shadow", "a/b.qcow2", "..", ".hidden", "x/../y"],
)
def test_an_image_that_is_a_path_is_refused_naming_the_field(image: str) -> None:
    vm = _bypassing_the_schema(make_vm(), image=image)
    with pytest.raises(ValueError, match=r"spec.boot.image: .* is not a plain name"):
        domain_xml.plan(vm, SMALL, KVM)


def test_a_kernel_that_is_a_path_is_refused_naming_the_field() -> None:
    vm = _bypassing_the_schema(_tiny(), name="../../../../etc/kubernetes/pki")
    with pytest.raises(ValueError, match=r"spec.boot.kernel.name: .* is not a plain name"):
        domain_xml.plan(vm, SMALL, TCG)


def test_a_kernel_pair_is_found_in_the_stores_kernels_folder() -> None:
    spec, files = domain_xml.plan(_tiny(), SMALL, TCG)
    assert spec.kernel is not None
    store = "/var/lib/kubenova/images"
    assert (spec.kernel.kernel, spec.kernel.initrd) == (
        f"{store}/kernels/tiny-guest/vmlinuz",
        f"{store}/kernels/tiny-guest/initrd",
    )
    assert [f.path for f in files.boot_files] == [spec.kernel.kernel, spec.kernel.initrd]
    assert files.overlay is None and files.base_image is None


# -- networks: kubenova's MACs, clean-traffic on every interface ----------------------------


def test_every_interface_gets_a_stable_locally_administered_mac_and_clean_traffic() -> None:
    spec, _ = domain_xml.plan(_web(), SMALL, KVM)
    root = ET.fromstring(domain_xml.build(spec))
    ifaces = root.findall("devices/interface")
    assert len(ifaces) == 2
    macs = [str(i.find("mac").get("address")) for i in ifaces]  # type: ignore[union-attr]
    assert len(set(macs)) == 2, "one MAC per interface"
    for mac in macs:
        first = int(mac.split(":")[0], 16)
        assert first & 0b10 and not first & 0b01, f"{mac}: locally administered unicast"
    for iface in ifaces:
        ref = iface.find("filterref")
        assert ref is not None and ref.get("filter") == "clean-traffic"
    again, _ = domain_xml.plan(_web(), SMALL, TCG)
    assert [n.mac for n in again.nics] == macs, "the same VM gets the same MACs on any host"
    other, _ = domain_xml.plan(make_vm("web-1", uid="another-uid", networks=[{"name": "eth0"}]),
                               SMALL, KVM)  # fmt: skip
    assert other.nics[0].mac != macs[0], "another VM (uid) gets another MAC"


def test_a_mac_stored_before_the_schema_refused_it_is_ignored() -> None:
    vm = make_vm(networks=[{"name": "eth0"}])
    vm.spec.networks[0].__dict__["mac_address"] = "52:54:00:aa:bb:cc"
    spec, _ = domain_xml.plan(vm, SMALL, KVM)
    assert spec.nics[0].mac == domain_xml.mac_address(UID, "eth0")
    assert "52:54:00:aa:bb:cc" not in domain_xml.build(spec)


# -- text XML cannot carry is refused, never written ----------------------------------------


@pytest.mark.parametrize("bad", ["\x00", "\x1b[2J", "\x08", "\r", "\ufffe", "\ud800"])
def test_a_command_line_xml_cannot_carry_is_refused_naming_the_field(bad: str) -> None:
    vm = _bypassing_the_schema(_tiny(), cmdline=f"console=ttyS0 {bad}")
    spec, _ = domain_xml.plan(vm, SMALL, TCG)
    with pytest.raises(ValueError, match=r"kernel.cmdline: .* the domain XML cannot carry"):
        domain_xml.build(spec)


def test_an_annotation_xml_cannot_carry_is_refused_naming_it() -> None:
    vm = make_vm(annotations={"kubenova.io/trace-id": "abc\x00def"})
    spec, _ = domain_xml.plan(vm, SMALL, KVM)
    with pytest.raises(ValueError, match=r"metadata.annotations\[kubenova.io/trace-id\]: "):
        domain_xml.build(spec)
    with pytest.raises(ValueError, match=r"restart-requested-at\]: .* U\+0000"):
        domain_xml.restart_element("t\x00")

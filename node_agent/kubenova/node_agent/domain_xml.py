"""VM → libvirt domain XML, built with ElementTree: names, paths and user data are user input
and never pass through a string template. Pure.

`plan()` turns a VirtualMachine (with its size and the host's settings) into a `DomainSpec`;
`build()` writes the XML; `read_owner()` finds which VM a domain belongs to from its metadata.
"""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import PurePosixPath

from kubenova.api import constants
from kubenova.api.flavor import FlavorSpec, HugePageSize
from kubenova.api.vm import VirtualMachine, VMResources
from kubenova.node_agent.hypervisor import Owner

OWNER_NS = "https://kubenova.io/xmlns/vm/1"
"""Namespace of the domain metadata element naming the VM that owns the domain."""
RESTART_NS = "https://kubenova.io/xmlns/restart/1"
"""Namespace of the metadata element with the last restart request the agent carried out."""
OWNER_PREFIX = "kubenova"
RESTART_PREFIX = "kubenova-restart"

_PCI = re.compile(r"^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$")
_HUGE_PAGE_KIB = {HugePageSize.SIZE_2MI: 2048, HugePageSize.SIZE_1GI: 1048576}


@dataclass(frozen=True)
class DomainSettings:
    """How this host runs domains (from the agent's configuration)."""

    domain_type: str = "kvm"
    """'kvm' in production, 'qemu' (TCG) where there is no hardware virtualisation,
    'test' for libvirt's test driver."""
    state_dir: str = "/var/lib/kubenova/domains"
    """Per-domain folders: disk overlay, cloud-init seed, serial log."""
    image_dir: str = "/var/lib/kubenova/images"
    """Where relative base-image names are found."""


@dataclass(frozen=True)
class KernelBoot:
    kernel: str
    initrd: str | None
    cmdline: str


@dataclass(frozen=True)
class Disk:
    path: str
    target: str
    device: str = "disk"
    """'disk' or 'cdrom'."""
    format: str = "qcow2"
    bus: str = "virtio"
    readonly: bool = False


@dataclass(frozen=True)
class Nic:
    network: str
    model: str
    mac: str | None = None


@dataclass(frozen=True)
class Storage:
    """Files the agent prepares on the host before defining the domain."""

    folder: str
    overlay: str | None = None
    base_image: str | None = None
    disk_bytes: int = 0
    seed: str | None = None
    user_data: str | None = None
    network_data: str | None = None
    instance_id: str = ""
    hostname: str = ""


@dataclass(frozen=True)
class DomainSpec:
    """Everything the domain XML says, already decided."""

    name: str
    uuid: str
    domain_type: str
    vcpus: int
    memory_kib: int
    owner: Owner
    kernel: KernelBoot | None = None
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    gpus: tuple[str, ...] = ()
    """PCI addresses passed through."""
    serial_log: str | None = None
    huge_page_kib: int | None = None
    trace_id: str | None = None
    restart_token: str | None = None


def domain_name(namespace: str, name: str) -> str:
    """The libvirt name of a VM's domain; '_' is in neither a namespace nor a VM name, so the
    mapping is one to one."""
    return f"{namespace}_{name}"


def plan(
    vm: VirtualMachine,
    size: VMResources,
    settings: DomainSettings,
    flavor: FlavorSpec | None = None,
) -> tuple[DomainSpec, Storage]:
    """The domain and the files a VM needs on this host."""
    meta = vm.metadata
    namespace = meta.namespace or "default"
    name = domain_name(namespace, meta.name)
    folder = str(PurePosixPath(settings.state_dir) / name)
    owner = Owner(namespace=namespace, name=meta.name, uid=meta.uid or "")
    disks: list[Disk] = []
    storage = Storage(folder=folder, instance_id=meta.uid or name, hostname=meta.name)
    boot = vm.spec.boot
    kernel = None
    if boot.kernel is not None:
        kernel = KernelBoot(boot.kernel.kernel, boot.kernel.initrd, boot.kernel.cmdline)
    if boot.image is not None:
        base = PurePosixPath(settings.image_dir) / boot.image  # an absolute image stays as is
        overlay = f"{folder}/root.qcow2"
        disks.append(Disk(path=overlay, target="vda"))
        storage = dataclasses.replace(
            storage, overlay=overlay, base_image=str(base), disk_bytes=size.disk.to_int()
        )
    ci = vm.spec.cloud_init
    if ci is not None and (ci.user_data or ci.network_data):
        seed = f"{folder}/seed.iso"
        disks.append(
            Disk(path=seed, target="hdc", device="cdrom", format="raw", bus="ide", readonly=True)
        )
        storage = dataclasses.replace(
            storage, seed=seed, user_data=ci.user_data or "", network_data=ci.network_data
        )
    nics = tuple(Nic(n.network, n.model, n.mac_address) for n in vm.spec.networks)
    huge = _HUGE_PAGE_KIB[flavor.huge_pages] if flavor and flavor.huge_pages else None
    spec = DomainSpec(
        name=name,
        uuid=meta.uid or "",
        domain_type=settings.domain_type,
        vcpus=size.vcpus,
        memory_kib=-(-size.memory.to_int() // 1024),
        owner=owner,
        kernel=kernel,
        disks=tuple(disks),
        nics=nics,
        gpus=tuple(vm.status.gpu_devices),
        serial_log=f"{folder}/serial.log",
        huge_page_kib=huge,
        trace_id=meta.annotations.get(constants.ANNOTATION_TRACE_ID),
        restart_token=meta.annotations.get(constants.ANNOTATION_RESTART_REQUESTED),
    )
    return spec, storage


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def build(spec: DomainSpec) -> str:
    """The domain XML for `spec`."""
    dom = ET.Element("domain", {"type": spec.domain_type})
    _sub(dom, "name", spec.name)
    if spec.uuid:
        _sub(dom, "uuid", spec.uuid)
    _metadata(_sub(dom, "metadata"), spec)
    _sub(dom, "memory", str(spec.memory_kib), unit="KiB")
    if spec.huge_page_kib:
        pages = _sub(_sub(dom, "memoryBacking"), "hugepages")
        _sub(pages, "page", size=str(spec.huge_page_kib), unit="KiB")
    _sub(dom, "vcpu", str(spec.vcpus), placement="static")
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm")
    if spec.kernel is not None:
        _sub(os_el, "kernel", spec.kernel.kernel)
        if spec.kernel.initrd:
            _sub(os_el, "initrd", spec.kernel.initrd)
        _sub(os_el, "cmdline", spec.kernel.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")
    _sub(_sub(dom, "features"), "acpi")
    if spec.domain_type == "kvm":
        _sub(dom, "cpu", mode="host-passthrough")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    for disk in spec.disks:
        _disk(devices, disk)
    for nic in spec.nics:
        iface = _sub(devices, "interface", type="network")
        if nic.mac:
            _sub(iface, "mac", address=nic.mac.lower())
        _sub(iface, "source", network=nic.network)
        _sub(iface, "model", type=nic.model)
    for address in spec.gpus:
        _hostdev(devices, address)
    if spec.serial_log:
        serial = _sub(devices, "serial", type="file")
        _sub(serial, "source", path=spec.serial_log, append="on")
        _sub(serial, "target", port="0")
        console = _sub(devices, "console", type="file")
        _sub(console, "source", path=spec.serial_log, append="on")
        _sub(console, "target", type="serial", port="0")
    _sub(devices, "memballoon", model="none")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


def _metadata(parent: ET.Element, spec: DomainSpec) -> None:
    owner = _sub(parent, f"{{{OWNER_NS}}}vm")
    _sub(owner, f"{{{OWNER_NS}}}namespace", spec.owner.namespace)
    _sub(owner, f"{{{OWNER_NS}}}name", spec.owner.name)
    _sub(owner, f"{{{OWNER_NS}}}uid", spec.owner.uid)
    if spec.trace_id:
        _sub(owner, f"{{{OWNER_NS}}}traceId", spec.trace_id)
    if spec.restart_token:
        _sub(_sub(parent, f"{{{RESTART_NS}}}restart"), f"{{{RESTART_NS}}}token", spec.restart_token)


def restart_element(token: str) -> str:
    """The metadata element recording that the domain was restarted for `token`."""
    el = ET.Element("restart")
    _sub(el, "token", token)
    return ET.tostring(el, encoding="unicode")


def _disk(devices: ET.Element, disk: Disk) -> None:
    el = _sub(devices, "disk", type="file", device=disk.device)
    _sub(el, "driver", name="qemu", type=disk.format)
    _sub(el, "source", file=disk.path)
    _sub(el, "target", dev=disk.target, bus=disk.bus)
    if disk.readonly:
        _sub(el, "readonly")


def _hostdev(devices: ET.Element, address: str) -> None:
    m = _PCI.match(address.lower())
    if m is None:
        raise ValueError(
            f"status.gpuDevices: {address!r} is not a PCI address (dddd:bb:ss.f); "
            "the scheduler must assign addresses the host reported"
        )
    dom, bus, slot, fn = m.groups()
    hostdev = _sub(devices, "hostdev", mode="subsystem", type="pci", managed="yes")
    src = _sub(hostdev, "source")
    _sub(src, "address", domain=f"0x{dom}", bus=f"0x{bus}", slot=f"0x{slot}", function=f"0x{fn}")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(el: ET.Element, name: str) -> str | None:
    for child in el:
        if _local(child.tag) == name:
            return child.text or ""
    return None


def read_owner(xml: str) -> tuple[Owner | None, str | None]:
    """The owner and the last handled restart token from a domain's XML (XMLDesc)."""
    root = ET.fromstring(xml)
    metadata = root.find("metadata")
    owner: Owner | None = None
    token: str | None = None
    if metadata is None:
        return None, None
    for el in metadata:
        if el.tag == f"{{{OWNER_NS}}}vm":
            ns, name, uid = (_child_text(el, k) for k in ("namespace", "name", "uid"))
            if ns and name:
                owner = Owner(namespace=ns, name=name, uid=uid or "")
        elif el.tag == f"{{{RESTART_NS}}}restart":
            token = _child_text(el, "token")
    return owner, token


def read_serial_log(xml: str) -> str | None:
    """The file the domain's serial console writes to, from its XML (after a live migration it
    is the path the guest was started with, wherever that was)."""
    source = ET.fromstring(xml).find("devices/serial/source")
    return source.get("path") if source is not None else None


ET.register_namespace(OWNER_PREFIX, OWNER_NS)
ET.register_namespace(RESTART_PREFIX, RESTART_NS)

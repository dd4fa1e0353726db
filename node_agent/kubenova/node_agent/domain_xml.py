"""VM → libvirt domain XML, built with ElementTree: names, paths and user data are user input
and never pass through a string template. Pure.

`plan()` turns a VirtualMachine (with its size and the host's settings) into a `DomainSpec`;
`build()` writes the XML; `read_owner()` finds which VM a domain belongs to from its metadata.

What a tenant writes never becomes a host path: boot sources are names looked up in the
administrator's image store (`storage.prepare` then checks that their real paths stay in it),
MAC addresses are derived from the VM's uid, every interface carries libvirt's clean-traffic
filter, and `build()` refuses text XML cannot carry rather than write ill-formed XML.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import PurePosixPath

from kubenova.api import constants
from kubenova.api.flavor import FlavorSpec, HugePageSize
from kubenova.api.text import is_plain_name
from kubenova.api.vm import VirtualMachine, VMResources
from kubenova.node_agent import credentials
from kubenova.node_agent.hypervisor import Owner

OWNER_NS = "https://kubenova.io/xmlns/vm/1"
"""Namespace of the domain metadata element naming the VM that owns the domain."""
RESTART_NS = "https://kubenova.io/xmlns/restart/1"
"""Namespace of the metadata element with the last restart request the agent carried out."""
OWNER_PREFIX = "kubenova"
RESTART_PREFIX = "kubenova-restart"

KERNELS = "kernels"
"""The image store's folder of kernel/initrd pairs: `kernels/<name>/vmlinuz` and `.../initrd`."""
KERNEL_FILE = "vmlinuz"
INITRD_FILE = "initrd"
TRAFFIC_FILTER = "clean-traffic"
"""libvirt's stock nwfilter: no MAC, IP or ARP spoofing, no other layer-2 traffic."""
MAC_PREFIX = "02"
"""First octet of the MACs kubenova assigns: locally administered, unicast (IEEE 802)."""

# Characters XML 1.0 cannot carry at all (everything but tab and LF below U+0020; the two
# non-characters; surrogates, which a Python string can hold but UTF-8 cannot), and CR, which
# a parser turns into LF in text: refused rather than changed behind the user's back.
_NOT_XML = re.compile("[\x00-\x08\x0b-\x1f\ufffe\uffff\ud800-\udfff]")
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
    """The administrator's image store: base images by name, kernel/initrd pairs in
    `kernels/<name>/`. Tenants name what is in it; nothing outside it is ever used."""
    console_dir: str = "/run/kubenova/console"
    """Where each domain's serial port listens as a unix socket, `<VM uid>.sock` (the
    agent's console bridges to it, docs/console.md). Short on purpose: a socket path has at
    most 107 bytes, which `<state dir>/<namespace>_<name>/` could pass."""


class DomainXMLError(ValueError):
    """The VM cannot become a domain on this host; the message names the field and what to do."""


@dataclass(frozen=True)
class KernelBoot:
    kernel: str
    initrd: str
    cmdline: str


@dataclass(frozen=True)
class StoreFile:
    """A file a VM names that must be in the image store (its real path included)."""

    field: str
    """The VM field that named it, for the error message."""
    name: str
    path: str


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
    mac: str
    traffic_filter: str | None = TRAFFIC_FILTER


@dataclass(frozen=True)
class Storage:
    """Files the agent prepares on the host before defining the domain."""

    folder: str
    store: str = ""
    """The image store every `boot_files` entry must resolve into."""
    boot_files: tuple[StoreFile, ...] = ()
    """Base image, or kernel and initrd: checked before anything is created or defined."""
    overlay: str | None = None
    base_image: str | None = None
    disk_bytes: int = 0
    seed: str | None = None
    user_data: str | bytes | None = dataclasses.field(default=None, repr=False)
    """Never in a repr, so never in a log line by accident (it may come from a Secret)."""
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
    console_socket: str | None = None
    """The serial port as a unix socket qemu listens on (the log still goes to `serial_log`);
    None: the port writes only the log file."""
    huge_page_kib: int | None = None
    trace_id: str | None = None
    restart_token: str | None = None


def domain_name(namespace: str, name: str) -> str:
    """The libvirt name of a VM's domain; '_' is in neither a namespace nor a VM name, so the
    mapping is one to one."""
    return f"{namespace}_{name}"


def mac_address(uid: str, interface: str) -> str:
    """The MAC of a VM's interface: stable for the VM (its uid) wherever and however often it
    is defined, different per interface, locally administered; 40 bits from a hash."""
    digest = hashlib.sha256(f"{uid}/{interface}".encode()).digest()
    return ":".join([MAC_PREFIX, *(f"{b:02x}" for b in digest[:5])])


def store_file(store: str, field: str, name: str, *parts: str) -> StoreFile:
    """Where a named boot source lives in the image store; a name that is not plain (a path,
    '..') is refused here, before any file is looked at."""
    if not is_plain_name(name):
        raise DomainXMLError(
            f"{field}: {name!r} is not a plain name; name an image an administrator put in "
            "the image store (lower-case letters, digits, '-', '.'), never a path"
        )
    return StoreFile(field, name, str(PurePosixPath(store, *parts, name)))


def plan(
    vm: VirtualMachine,
    size: VMResources,
    settings: DomainSettings,
    flavor: FlavorSpec | None = None,
    user_data: str | bytes | None = None,
    ssh_keys: tuple[str, ...] = (),
) -> tuple[DomainSpec, Storage]:
    """The domain and the files a VM needs on this host. `user_data` is what
    `spec.cloudInit.userDataSecretRef` names, read by the caller (else the inline userData);
    `ssh_keys` the checked keys of `spec.accessCredentials` (`credentials.parse_keys`), added
    to it."""
    meta = vm.metadata
    namespace = meta.namespace or "default"
    name = domain_name(namespace, meta.name)
    folder = str(PurePosixPath(settings.state_dir) / name)
    owner = Owner(namespace=namespace, name=meta.name, uid=meta.uid or "")
    disks: list[Disk] = []
    store = settings.image_dir
    storage = Storage(folder=folder, store=store, instance_id=meta.uid or name, hostname=meta.name)
    boot = vm.spec.boot
    kernel = None
    if boot.kernel is not None:
        pair = store_file(store, "spec.boot.kernel.name", boot.kernel.name, KERNELS)
        vmlinuz, initrd = (
            dataclasses.replace(pair, path=f"{pair.path}/{f}") for f in (KERNEL_FILE, INITRD_FILE)
        )
        kernel = KernelBoot(vmlinuz.path, initrd.path, boot.kernel.cmdline)
        storage = dataclasses.replace(storage, boot_files=(vmlinuz, initrd))
    if boot.image is not None:
        base = store_file(store, "spec.boot.image", boot.image)
        overlay = f"{folder}/root.qcow2"
        disks.append(Disk(path=overlay, target="vda"))
        storage = dataclasses.replace(
            storage,
            boot_files=(base,),
            overlay=overlay,
            base_image=base.path,
            disk_bytes=size.disk.to_int(),
        )
    ci = vm.spec.cloud_init
    if user_data is None and ci is not None:
        user_data = ci.user_data
    network_data = ci.network_data if ci is not None else None
    # A VM with access credentials always has a seed (even while its Secrets hold no key), so
    # keys added to a Secret later reach a domain that was defined without any.
    wants_keys = bool(vm.spec.access_credentials)
    if wants_keys or user_data or network_data:
        seed = f"{folder}/seed.iso"
        disks.append(
            Disk(path=seed, target="hdc", device="cdrom", format="raw", bus="ide", readonly=True)
        )
        storage = dataclasses.replace(
            storage,
            seed=seed,
            user_data=credentials.merge(user_data, ssh_keys) or "",
            network_data=network_data,
            instance_id=credentials.instance_id(storage.instance_id, ssh_keys),
        )
    # A MAC the user set (only in objects stored before the schema refused it) is ignored.
    uid = meta.uid or name
    nics = tuple(Nic(n.network, n.model, mac_address(uid, n.name)) for n in vm.spec.networks)
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
        console_socket=console_socket(settings, meta.uid) if meta.uid else None,
        huge_page_kib=huge,
        trace_id=meta.annotations.get(constants.ANNOTATION_TRACE_ID),
        restart_token=meta.annotations.get(constants.ANNOTATION_RESTART_REQUESTED),
    )
    return spec, storage


def _xml_safe(value: str, where: str) -> str:
    m = _NOT_XML.search(value)
    if m is not None:
        raise DomainXMLError(
            f"{where}: {value[:64]!r} contains U+{ord(m.group()):04X}, which the domain XML "
            "cannot carry; remove it"
        )
    return value


def _user_text(spec: DomainSpec) -> list[tuple[str, str | None]]:
    """The free text a VM's user controls, by the field it came from."""
    cmdline = spec.kernel.cmdline if spec.kernel else None
    return [
        ("spec.boot.kernel.cmdline", cmdline),
        (f"metadata.annotations[{constants.ANNOTATION_TRACE_ID}]", spec.trace_id),
        (f"metadata.annotations[{constants.ANNOTATION_RESTART_REQUESTED}]", spec.restart_token),
    ]


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    # The last guard: whatever reaches the tree is text XML can carry, so the output parses.
    for key, value in attrs.items():
        _xml_safe(value, f"domain XML <{_local(tag)} {key}>")
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = _xml_safe(text, f"domain XML <{_local(tag)}>")
    return el


def build(spec: DomainSpec) -> str:
    """The domain XML for `spec`; `DomainXMLError` (naming the field) for text XML cannot
    carry, never ill-formed XML."""
    for field, value in _user_text(spec):
        if value is not None:
            _xml_safe(value, field)
    dom = ET.Element("domain", {"type": _xml_safe(spec.domain_type, "domain type")})
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
        _interface(devices, nic)
    for address in spec.gpus:
        _hostdev(devices, address)
    if spec.serial_log:
        # With a socket, qemu listens on it (the agent's console connects) and still writes
        # everything the guest prints to the log file, connected or not, so the log outlives
        # every session and the VM's stop; append='on' keeps it across restarts and migrations.
        for tag, target in (
            ("serial", {"port": "0"}),
            ("console", {"type": "serial", "port": "0"}),
        ):
            if spec.console_socket:
                el = _sub(devices, tag, type="unix")
                _sub(el, "source", mode="bind", path=spec.console_socket)
                _sub(el, "log", file=spec.serial_log, append="on")
            else:
                el = _sub(devices, tag, type="file")
                _sub(el, "source", path=spec.serial_log, append="on")
            _sub(el, "target", **target)
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
    _xml_safe(token, f"metadata.annotations[{constants.ANNOTATION_RESTART_REQUESTED}]")
    el = ET.Element("restart")
    _sub(el, "token", token)
    return ET.tostring(el, encoding="unicode")


def _interface(devices: ET.Element, nic: Nic) -> None:
    iface = _sub(devices, "interface", type="network")
    _sub(iface, "mac", address=nic.mac.lower())
    _sub(iface, "source", network=nic.network)
    _sub(iface, "model", type=nic.model)
    if nic.traffic_filter:
        # The guest's IP is learnt from the DHCP exchange only (libvirt snoops it), never from
        # whatever source address the guest sends first: kubenova does not assign IPs itself.
        ref = _sub(iface, "filterref", filter=nic.traffic_filter)
        _sub(ref, "parameter", name="CTRL_IP_LEARNING", value="dhcp")


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


def console_socket(settings: DomainSettings, uid: str) -> str:
    """The unix socket of a VM's serial port on this host."""
    return str(PurePosixPath(settings.console_dir) / f"{uid}.sock")


def read_serial_log(xml: str) -> str | None:
    """The file the domain's serial console writes to, from its XML (after a live migration it
    is the path the guest was started with, wherever that was)."""
    serial = ET.fromstring(xml).find("devices/serial")
    if serial is None:
        return None
    log = serial.find("log")
    if serial.get("type") == "unix" and log is not None:
        return log.get("file")
    source = serial.find("source")
    return source.get("path") if source is not None else None


ET.register_namespace(OWNER_PREFIX, OWNER_NS)
ET.register_namespace(RESTART_PREFIX, RESTART_NS)

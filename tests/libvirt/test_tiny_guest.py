"""A real guest under qemu (TCG) through the agent: Debian's kernel and a busybox initramfs
(hack/tiny-guest.sh), a libvirtd without systemd (hack/libvirt-setup). The VM reaches Running,
its serial console shows the guest's marker, an ACPI stop takes it to Stopped, deletion
removes the domain and its folder."""

from __future__ import annotations

import time
from pathlib import Path

import libvirt
import pytest

from tests.e2e.bind import bind, phase, vm
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.libvirt import TINY_KERNEL, Agents, start_qemu_guest

pytestmark = [pytest.mark.libvirt, pytest.mark.slow, pytest.mark.e2e]

MARKER = "KUBENOVA-GUEST-READY"


def test_a_tiny_guest_boots_stops_and_is_deleted_through_the_agent(
    test_cluster: LocalCluster,
    namespace: str,
    agents: Agents,
    libvirtd: str,
    tiny_image_store: Path,
    tmp_path: Path,
) -> None:
    state = tmp_path / "domains"
    host = start_qemu_guest(
        test_cluster, namespace, agents, tiny_image_store, state, "tiny", TINY_KERNEL
    )
    t0 = time.monotonic()
    bind(test_cluster, namespace, "tiny", host)
    wait_for("tiny Running", lambda: phase(test_cluster, namespace, "tiny") == "Running", 60)
    running_after = time.monotonic() - t0
    serial = state / f"{namespace}_tiny" / "serial.log"
    wait_for("the guest's marker on its serial console", lambda: (
        serial.exists() and MARKER in serial.read_text(errors="replace")
    ), timeout=90, interval=0.1)  # fmt: skip
    booted_after = time.monotonic() - t0
    obj = vm(test_cluster, namespace, "tiny")
    assert obj is not None
    conn = libvirt.open("qemu:///system")
    dom = conn.lookupByName(f"{namespace}_tiny")
    assert dom.UUIDString() == obj["metadata"]["uid"]

    t1 = time.monotonic()
    test_cluster.kubectl(
        "patch", "vm", "tiny", "-n", namespace, "--type=merge",
        "-p", '{"spec":{"runStrategy":"Halted"}}',
    )  # fmt: skip
    wait_for("tiny Stopped", lambda: phase(test_cluster, namespace, "tiny") == "Stopped", 40)
    stopped_after = time.monotonic() - t1
    assert dom.state()[1] == libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN, "ACPI, not destroy, stopped it"

    test_cluster.kubectl("delete", "vm", "tiny", "-n", namespace, "--timeout=30s")
    assert f"{namespace}_tiny" not in [d.name() for d in conn.listAllDomains(0)]
    assert not serial.parent.exists()
    conn.close()
    print(
        f"\ntiny guest: Running {running_after:.1f} s after binding, marker at "
        f"{booted_after:.1f} s; ACPI stop to Stopped {stopped_after:.1f} s"
    )

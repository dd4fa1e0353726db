"""SSH keys of `spec.accessCredentials` read from inside a real guest under qemu (TCG), through
the agent: Debian's kernel with a busybox initramfs that mounts the NoCloud seed the agent
attached (hack/seed-guest.sh) and prints its files on the serial console. The keys are in the
guest's user-data; after the Secret is edited, the next start shows the new keys and a new
instance-id, which is what makes cloud-init apply them."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.bind import bind, phase
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.libvirt import Agents, start_qemu_guest

pytestmark = [pytest.mark.libvirt, pytest.mark.slow, pytest.mark.e2e]

HACK = Path(__file__).resolve().parents[2] / "hack"
KERNEL = "seed-guest"
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINWEROBVbsZOIean92K5eq+GnJyisZjuf/IRHexdo+jA a@laptop"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFrSc72GyCN6n/Ppr9kBKVr0JtE1FyGzMWDWK1AvEzSZ b@laptop"
_SECTION = re.compile(r"SEED-GUEST: (meta-data|user-data) begin\r?\n(.*?)SEED-GUEST: \1 end", re.S)


@pytest.fixture(scope="session")
def seed_guest_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image store holding the seed-printing guest as the kernel/initrd pair `seed-guest`."""
    proc = subprocess.run(
        ["bash", str(HACK / "seed-guest.sh")],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"hack/seed-guest.sh failed:\n{proc.stderr}")
    built = Path(proc.stdout.strip().splitlines()[-1])
    store = tmp_path_factory.mktemp("images")
    pair = store / "kernels" / KERNEL
    pair.mkdir(parents=True)
    shutil.copyfile(built / "vmlinuz", pair / "vmlinuz")
    shutil.copyfile(built / "initrd.img", pair / "initrd")
    return store


def _secret(tc: LocalCluster, namespace: str, key: str) -> None:
    tc.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "keys", "namespace": namespace},
        "data": {"alice": base64.b64encode(f"{key}\n".encode()).decode()},
    }))  # fmt: skip


def _boots(serial: Path) -> list[dict[str, str]]:
    """Every boot's seed files as the guest printed them, oldest first (the log appends)."""
    text = serial.read_text(errors="replace") if serial.exists() else ""
    boots: list[dict[str, str]] = []
    for name, body in _SECTION.findall(text):
        if name == "meta-data":
            boots.append({})
        if boots:
            boots[-1][name] = body.replace("\r\n", "\n")
    return [b for b in boots if "user-data" in b]


def _run(tc: LocalCluster, namespace: str, strategy: str) -> None:
    tc.kubectl(
        "patch", "vm", "guest", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"runStrategy": strategy}}),
    )  # fmt: skip


def test_the_guest_reads_the_ssh_keys_from_its_seed_and_new_keys_at_the_next_boot(
    test_cluster: LocalCluster,
    namespace: str,
    agents: Agents,
    libvirtd: str,
    seed_guest_store: Path,
    tmp_path: Path,
) -> None:
    state = tmp_path / "domains"
    _secret(test_cluster, namespace, KEY_A)
    host = start_qemu_guest(
        test_cluster, namespace, agents, seed_guest_store, state, "guest", KERNEL,
        memory="192Mi", grace=5, spec={
            "cloudInit": {"userData": "#cloud-config\nhostname: guest\n"},
            "accessCredentials": [{"sshPublicKey": {"source": {"secret": {"secretName": "keys"}}}}],
        },
    )  # fmt: skip
    bind(test_cluster, namespace, "guest", host)
    wait_for("guest Running", lambda: phase(test_cluster, namespace, "guest") == "Running", 60)
    serial = state / f"{namespace}_guest" / "serial.log"
    first = wait_for("the guest printing its seed", lambda: _boots(serial), 120, interval=0.2)[0]
    user = yaml.safe_load(first["user-data"])
    assert user == {"hostname": "guest", "ssh_authorized_keys": [KEY_A]}, first["user-data"]
    instance = yaml.safe_load(first["meta-data"])["instance-id"]

    # The key is rotated in the Secret; a stop and a start boot the guest with the new one.
    _secret(test_cluster, namespace, KEY_B)
    _run(test_cluster, namespace, "Halted")
    wait_for("guest Stopped", lambda: phase(test_cluster, namespace, "guest") == "Stopped", 60)
    _run(test_cluster, namespace, "Always")
    wait_for("guest Running", lambda: phase(test_cluster, namespace, "guest") == "Running", 60)
    boots = wait_for("a second boot's seed", lambda: _boots(serial)[1:], 120, interval=0.2)
    user = yaml.safe_load(boots[0]["user-data"])
    assert user == {"hostname": "guest", "ssh_authorized_keys": [KEY_B]}
    assert yaml.safe_load(boots[0]["meta-data"])["instance-id"] != instance

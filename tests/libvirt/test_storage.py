"""A domain's files: the qcow2 overlay on a base image, the cloud-init seed, removal kept
inside the state folder. Needs qemu-img and genisoimage (hack/setup installs them)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from kubenova.node_agent import storage
from kubenova.node_agent.domain_xml import Storage

pytestmark = pytest.mark.libvirt


def _base(tmp_path: Path) -> Path:
    base = tmp_path / "images" / "base.qcow2"
    base.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    return base


def test_overlay_and_seed_are_created_once_and_kept(tmp_path: Path) -> None:
    base = _base(tmp_path)
    folder = tmp_path / "domains" / "ns_vm"
    plan = Storage(
        folder=str(folder),
        overlay=str(folder / "root.qcow2"),
        base_image=str(base),
        disk_bytes=1024**3,
        seed=str(folder / "seed.iso"),
        user_data="#cloud-config\nhostname: vm\n",
        instance_id="uid-1",
        hostname="vm",
    )
    asyncio.run(storage.prepare(plan))
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(folder / "root.qcow2")],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    assert info["backing-filename"] == str(base)
    assert info["virtual-size"] == 1024**3
    iso = (folder / "seed.iso").read_bytes()
    assert b"CIDATA" in iso.upper()
    assert b"hostname: vm" in iso

    (folder / "root.qcow2").write_bytes(b"guest wrote this")
    asyncio.run(storage.prepare(plan))  # a restarted agent must not wipe the disk
    assert (folder / "root.qcow2").read_bytes() == b"guest wrote this"


def test_a_missing_base_image_is_named(tmp_path: Path) -> None:
    plan = Storage(
        folder=str(tmp_path / "d"), overlay=str(tmp_path / "d" / "r.qcow2"),
        base_image="/nowhere/debian.qcow2",
    )  # fmt: skip
    with pytest.raises(storage.StorageError, match=r"/nowhere/debian.qcow2 does not exist"):
        asyncio.run(storage.prepare(plan))


def test_removal_refuses_paths_outside_the_state_folder(tmp_path: Path) -> None:
    state = tmp_path / "domains"
    (state / "ns_vm").mkdir(parents=True)
    with pytest.raises(storage.StorageError, match="refusing"):
        asyncio.run(storage.remove(str(state / ".." / "elsewhere"), str(state)))
    with pytest.raises(storage.StorageError, match="refusing"):
        asyncio.run(storage.remove(str(state), str(state)))
    asyncio.run(storage.remove(str(state / "ns_vm"), str(state)))
    assert not (state / "ns_vm").exists()

"""A domain's files on the host: its folder, the qcow2 overlay on a base image (`qemu-img`),
the cloud-init NoCloud seed (an ISO labelled `cidata`), the serial log. Does I/O."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import yaml

from kubenova.node_agent.domain_xml import Storage

SEED_TOOLS = ("genisoimage", "mkisofs", "xorrisofs")


class StorageError(RuntimeError):
    """Preparing a domain's files failed; the message names the file and the tool."""


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _out, err = await proc.communicate()
    if proc.returncode != 0:
        raise StorageError(f"{' '.join(argv)} failed: {err.decode(errors='replace').strip()}")


async def prepare(plan: Storage) -> None:
    """Create what `plan` needs; files already there are kept (a restarted agent must not
    wipe a guest's disk)."""
    folder = Path(plan.folder)
    folder.mkdir(parents=True, exist_ok=True)
    if plan.overlay and not Path(plan.overlay).exists():
        base = Path(plan.base_image or "")
        if not base.is_file():
            raise StorageError(
                f"base image {base} does not exist on this host; copy it into the image store "
                "or fix spec.boot.image"
            )
        partial = f"{plan.overlay}.partial"
        size = [str(plan.disk_bytes)] if plan.disk_bytes else []
        await _run(
            "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), partial,
            *size,
        )  # fmt: skip
        Path(partial).rename(plan.overlay)
    if plan.seed and not Path(plan.seed).exists():
        await _seed(plan)


async def _seed(plan: Storage) -> None:
    tool = next((t for t in SEED_TOOLS if shutil.which(t)), None)
    if tool is None:
        raise StorageError(
            f"spec.cloudInit needs one of {', '.join(SEED_TOOLS)} on the host to build "
            f"{plan.seed}; install genisoimage"
        )
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        meta = {"instance-id": plan.instance_id, "local-hostname": plan.hostname}
        (src / "meta-data").write_text(yaml.safe_dump(meta))
        (src / "user-data").write_text(plan.user_data or "")
        if plan.network_data:
            (src / "network-config").write_text(plan.network_data)
        partial = f"{plan.seed}.partial"
        await _run(tool, "-quiet", "-output", partial, "-volid", "cidata", "-joliet", "-rock", tmp)
        Path(partial).rename(str(plan.seed))


async def remove(folder: str, state_dir: str) -> None:
    """Delete a domain's folder, refusing anything outside the state folder."""
    path = Path(folder).resolve()
    root = Path(state_dir).resolve()
    if path == root or root not in path.parents:
        raise StorageError(f"refusing to remove {path}: not a domain folder under {root}")
    await asyncio.to_thread(shutil.rmtree, path, True)

"""A domain's files on the host: its folder, the qcow2 overlay on a base image (`qemu-img`),
the cloud-init NoCloud seed (an ISO labelled `cidata`), the serial log. Does I/O.

Before anything is created, every file the VM named (base image, kernel, initrd) must resolve,
symlinks followed, to a regular file inside the image store: the names were checked to be
plain, and this is the second line. A guest's files are its owner's only: the folder is not
listable by others (0711: qemu, which may run as another user, still reaches its files) and the
overlay and the seed, which may carry a Secret's user data, are 0600.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from kubenova.node_agent.domain_xml import Storage, StoreFile

log = logging.getLogger(__name__)
SEED_TOOLS = ("genisoimage", "mkisofs", "xorrisofs")
FOLDER_MODE = 0o711
FILE_MODE = 0o600
SEED_DIGEST_SUFFIX = ".sha256"
"""Beside the seed: the digest of the files it was built from."""


class StorageError(RuntimeError):
    """Preparing a domain's files failed; the message names the file and the tool."""


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _out, err = await proc.communicate()
    if proc.returncode != 0:
        raise StorageError(f"{' '.join(argv)} failed: {err.decode(errors='replace').strip()}")


def check_in_store(file: StoreFile, store: str) -> Path:
    """The real path of a file a VM named, which must be a regular file inside the image store
    (`StorageError` naming the field otherwise)."""
    root = Path(store).resolve()
    real = Path(file.path).resolve()
    if root not in real.parents:
        # Where the link leads is for the admin's log, not for the VM's status: it may name
        # another tenant's files.
        log.warning("refusing %s: %s resolves to %s, outside %s", file.field, file.path, real, root)
        raise StorageError(
            f"{file.field} {file.name!r}: {file.path} leads outside the image store; kubenova "
            "uses no file outside it (an admin must fix the link)"
        )
    if not real.is_file():
        raise StorageError(
            f"{file.field} {file.name!r}: {file.path} is not in the image store of this host; "
            "name an image an administrator made available, or ask one to add it"
        )
    return real


def _private(path: str | Path, mode: int = FILE_MODE) -> None:
    """Create `path` empty with `mode` (so no other user can open it even for a moment)."""
    os.close(os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, mode))
    Path(path).chmod(mode)  # O_CREAT's mode passes through the umask


async def prepare(plan: Storage) -> None:
    """Create what `plan` needs; files already there are kept (a restarted agent must not
    wipe a guest's disk), but the seed is rebuilt when what it holds changed. Nothing is
    created when a named file is not in the image store."""
    for file in plan.boot_files:
        check_in_store(file, plan.store)
    folder = Path(plan.folder)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(FOLDER_MODE)
    if plan.overlay and not Path(plan.overlay).exists():
        base = Path(plan.base_image or "")
        if not base.is_file():
            raise StorageError(
                f"base image {base} does not exist on this host; copy it into the image store "
                "or fix spec.boot.image"
            )
        partial = f"{plan.overlay}.partial"
        size = [str(plan.disk_bytes)] if plan.disk_bytes else []
        _private(partial)
        await _run(
            "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), partial,
            *size,
        )  # fmt: skip
        Path(partial).chmod(FILE_MODE)
        Path(partial).rename(plan.overlay)
    if plan.seed:
        await refresh_seed(plan)


def _seed_files(plan: Storage) -> dict[str, bytes]:
    """The seed's files, exactly as written into the ISO."""
    meta = {"instance-id": plan.instance_id, "local-hostname": plan.hostname}
    data = plan.user_data or ""
    files = {
        "meta-data": yaml.safe_dump(meta).encode(),
        "user-data": data.encode() if isinstance(data, str) else data,
    }
    if plan.network_data:
        files["network-config"] = plan.network_data.encode()
    return files


def _digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}\0{len(files[name])}\0".encode())
        h.update(files[name])
    return h.hexdigest()


async def refresh_seed(plan: Storage) -> bool:
    """Build the seed when it is missing or its files changed (a Secret it was made from was
    edited); True when it was (re)built. A digest of the files it holds is kept beside it, 0600
    like the seed (a digest of short user data could be guessed back)."""
    if not plan.seed:
        return False
    files = _seed_files(plan)
    digest = _digest(files)
    mark = Path(f"{plan.seed}{SEED_DIGEST_SUFFIX}")
    if Path(plan.seed).exists() and mark.exists() and mark.read_text().strip() == digest:
        return False
    await _seed(plan, files)
    _private(mark)
    mark.write_text(digest + "\n")
    return True


async def _seed(plan: Storage, files: dict[str, bytes]) -> None:
    tool = next((t for t in SEED_TOOLS if shutil.which(t)), None)
    if tool is None:
        raise StorageError(
            f"spec.cloudInit needs one of {', '.join(SEED_TOOLS)} on the host to build "
            f"{plan.seed}; install genisoimage"
        )
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        for name, content in files.items():
            (src / name).write_bytes(content)
        partial = f"{plan.seed}.partial"
        _private(partial)
        await _run(tool, "-quiet", "-output", partial, "-volid", "cidata", "-joliet", "-rock", tmp)
        Path(partial).chmod(FILE_MODE)
        # The rename replaces a seed a stopped domain was defined with; a running qemu keeps
        # the one it opened.
        Path(partial).rename(str(plan.seed))


async def remove(folder: str, state_dir: str) -> None:
    """Delete a domain's folder, refusing anything outside the state folder."""
    path = Path(folder).resolve()
    root = Path(state_dir).resolve()
    if path == root or root not in path.parents:
        raise StorageError(f"refusing to remove {path}: not a domain folder under {root}")
    await asyncio.to_thread(shutil.rmtree, path, True)

"""The image store's second line of defence (`storage.check_in_store`, `storage.prepare`): a
named boot file must resolve, links followed, to a regular file inside the store, and nothing
is created on the host when one does not. Files in a temporary folder; no external tools."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kubenova.node_agent import storage
from kubenova.node_agent.domain_xml import Storage, StoreFile

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    (root / "good.qcow2").write_bytes(b"qcow2")
    return root


def _named(store: Path, name: str) -> StoreFile:
    return StoreFile("spec.boot.image", name, str(store / name))


def test_a_file_in_the_store_and_a_link_within_it_resolve(store: Path) -> None:
    (store / "alias.qcow2").symlink_to("good.qcow2")
    assert storage.check_in_store(_named(store, "good.qcow2"), str(store)) == store / "good.qcow2"
    assert storage.check_in_store(_named(store, "alias.qcow2"), str(store)) == store / "good.qcow2"


def test_a_link_out_of_the_store_is_refused_naming_the_field_not_the_target(
    store: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "domains" / "team-b_db" / "root.qcow2"
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"someone else's disk")
    (store / "evil.qcow2").symlink_to(victim)
    with pytest.raises(storage.StorageError) as e:
        storage.check_in_store(_named(store, "evil.qcow2"), str(store))
    assert str(e.value) == (
        f"spec.boot.image 'evil.qcow2': {store}/evil.qcow2 leads outside the image store; "
        "kubenova uses no file outside it (an admin must fix the link)"
    )
    assert str(victim.parent) not in str(e.value), "the VM's status must not show the target"


def test_a_store_that_is_itself_a_link_still_confines(store: Path, tmp_path: Path) -> None:
    linked = tmp_path / "store-link"
    linked.symlink_to(store)
    found = storage.check_in_store(_named(linked, "good.qcow2"), str(linked))
    assert found == store / "good.qcow2"


@pytest.mark.parametrize("what", ["missing.qcow2", "folder"])
def test_a_missing_file_or_a_folder_is_named_with_what_to_do(store: Path, what: str) -> None:
    (store / "folder").mkdir()
    with pytest.raises(storage.StorageError, match=rf"'{what}': .* is not in the image store"):
        storage.check_in_store(_named(store, what), str(store))


def test_prepare_creates_nothing_when_a_boot_file_leaves_the_store(
    store: Path, tmp_path: Path
) -> None:
    (store / "evil.qcow2").symlink_to("/etc/hostname")
    folder = tmp_path / "domains" / "ns_vm"
    plan = Storage(
        folder=str(folder),
        store=str(store),
        boot_files=(_named(store, "evil.qcow2"),),
        overlay=str(folder / "root.qcow2"),
        base_image=str(store / "evil.qcow2"),
        seed=str(folder / "seed.iso"),
        user_data="#cloud-config\n",
    )
    with pytest.raises(storage.StorageError, match="outside the image store"):
        asyncio.run(storage.prepare(plan))
    assert not folder.exists()
    assert not folder.parent.exists()


def test_user_data_never_shows_in_a_plans_repr() -> None:
    plan = Storage(folder="/d", user_data="#cloud-config\npassword: hunter2\n")
    assert "hunter2" not in repr(plan)

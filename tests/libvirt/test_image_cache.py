"""The agent's image cache on its own, against a loopback HTTP server: eviction under the size
limit, formats (raw converted, a qcow2 with a backing file or a raw file posing as qcow2
refused), back-off after a failure, and a leftover download of another source discarded.
Needs qemu-img (hack/setup installs it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from kubenova.api.image import ImportEvent, ImportReport, VMImage
from kubenova.node_agent.imagecache import ImageCache, ImageError
from tests.fixtures.imageserver import ImageServer, qcow2
from tests.fixtures.libvirt import Loop

pytestmark = pytest.mark.libvirt


def _image(name: str, uid: str = "u1", **spec: Any) -> VMImage:
    return VMImage.parse({"metadata": {"name": name, "uid": uid}, "spec": spec})


class Recorder:
    def __init__(self) -> None:
        self.reports: list[tuple[str, ImportReport]] = []

    async def __call__(self, image: VMImage, report: ImportReport) -> None:
        self.reports.append((image.metadata.name, report))


def _sample(name: str) -> float:
    """A series of host h1 from this process's registry (the agent's metrics module)."""
    value = REGISTRY.get_sample_value(name, {"host": "h1"})
    return value or 0.0


def _cache(store: Path, limit: int = 0, needed: set[str] | None = None) -> ImageCache:
    cache = ImageCache(str(store), "h1", limit, Recorder(), needed=lambda: set(needed or ()))
    cache.load()
    return cache


def test_unused_images_are_evicted_least_recently_used_first(
    aio: Loop, image_server: ImageServer, tmp_path: Path
) -> None:
    data = qcow2(tmp_path / "a.qcow2")
    images = {}
    for n in ("a", "b", "c"):
        url, sha = image_server.add(f"/{n}.qcow2", data)
        images[n] = _image(n, url=url, sha256=sha)
    needed: set[str] = set()
    cache = _cache(tmp_path / "store", limit=2 * len(data), needed=needed)
    cache.needed = lambda: set(needed)
    before = _sample("kubenova_agent_image_cache_evictions_total")
    aio.run(cache.ensure(images["a"]))
    aio.run(cache.ensure(images["b"]))
    aio.run(cache.ensure(images["a"]))  # a is now the most recently used
    aio.run(cache.ensure(images["c"]))
    assert [h["name"] for h in cache.held()] == ["a", "c"]
    assert not list((tmp_path / "store" / "cache").glob("b_*"))
    assert _sample("kubenova_agent_image_cache_evictions_total") - before == 1
    assert _sample("kubenova_agent_image_cache_bytes") == 2 * len(data)
    # A needed image stays, even over the limit.
    needed |= {"a", "c"}
    aio.run(cache.ensure(images["b"]))
    assert [h["name"] for h in cache.held()] == ["a", "b", "c"]


def test_a_raw_image_is_converted_to_qcow2_after_its_checksum_is_verified(
    aio: Loop, image_server: ImageServer, tmp_path: Path
) -> None:
    raw = bytes(range(256)) * 4096
    url, sha = image_server.add("/disk.raw", raw)
    cache = _cache(tmp_path / "store")
    files = aio.run(cache.ensure(_image("r", url=url, sha256=sha, format="raw")))
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", files["disk"]], capture_output=True, check=True
        ).stdout
    )
    assert info["format"] == "qcow2" and info["virtual-size"] == len(raw)
    assert cache.held()[0]["sha256"] == sha


@pytest.mark.parametrize("kind", ["raw-as-qcow2", "backing-file"])
def test_a_file_that_is_not_a_self_contained_qcow2_is_refused(
    aio: Loop, image_server: ImageServer, tmp_path: Path, kind: str
) -> None:
    if kind == "raw-as-qcow2":
        data, says = b"\0" * 65536, "spec.format is qcow2 but the file is raw"
    else:
        base = tmp_path / "base.qcow2"
        qcow2(base)
        child = tmp_path / "child.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(child)],
            check=True,
        )
        data, says = child.read_bytes(), "has a backing file"
    url, sha = image_server.add("/x.qcow2", data)
    cache = _cache(tmp_path / "store")
    with pytest.raises(ImageError) as e:
        aio.run(cache.ensure(_image("x", url=url, sha256=sha)))
    assert e.value.reason == "BadFormat" and says in str(e.value)
    assert cache.held() == []
    assert not list((tmp_path / "store" / "cache").glob("x_*/disk"))


def test_a_failed_import_is_not_retried_before_its_back_off(
    aio: Loop, image_server: ImageServer, tmp_path: Path
) -> None:
    url, _sha = image_server.add("/y.qcow2", qcow2(tmp_path / "y.qcow2"))
    cache = _cache(tmp_path / "store")
    image = _image("y", url=url, sha256="1" * 64)
    for _ in range(3):
        with pytest.raises(ImageError) as e:
            aio.run(cache.ensure(image))
        assert e.value.reason == "ChecksumMismatch"
    assert len(image_server.gets("/y.qcow2")) == 1
    assert isinstance(cache.report, Recorder)
    assert [r.event for _, r in cache.report.reports] == [
        ImportEvent.STARTED,
        ImportEvent.FAILED,
    ]
    # A VMImage of that name made anew (another uid) is tried at once.
    with pytest.raises(ImageError):
        aio.run(cache.ensure(_image("y", uid="u2", url=url, sha256="1" * 64)))
    assert len(image_server.gets("/y.qcow2")) == 2


def test_a_missing_file_fails_with_the_http_status(
    aio: Loop, image_server: ImageServer, tmp_path: Path
) -> None:
    cache = _cache(tmp_path / "store")
    with pytest.raises(ImageError) as e:
        aio.run(cache.ensure(_image("z", url=f"{image_server.base}/nope", sha256="2" * 64)))
    assert e.value.reason == "HTTPError" and "answered 404" in str(e.value)


def test_a_leftover_download_of_another_source_is_discarded_not_resumed(
    aio: Loop, image_server: ImageServer, tmp_path: Path
) -> None:
    data = qcow2(tmp_path / "w.qcow2")
    url, sha = image_server.add("/w.qcow2", data)
    folder = tmp_path / "store" / "cache" / f"w_{sha[:16]}"
    folder.mkdir(parents=True)
    (folder / "disk.part").write_bytes(b"junk from an older VMImage w")
    (folder / "disk.part.json").write_text(json.dumps({"url": url, "sha256": "3" * 64}))
    cache = _cache(tmp_path / "store")
    files = aio.run(cache.ensure(_image("w", url=url, sha256=sha)))
    assert Path(files["disk"]).read_bytes() == data
    assert [r.range for r in image_server.gets("/w.qcow2")] == [None]
    # And a restarted cache finds it verified, without fetching again.
    again = _cache(tmp_path / "store")
    assert again.held() == [{"name": "w", "sha256": sha, "size": len(data)}]
    aio.run(again.ensure(_image("w", url=url, sha256=sha)))
    assert len(image_server.gets("/w.qcow2")) == 1


def test_an_image_made_anew_under_its_name_never_replaces_the_copy_a_vm_boots_from(
    aio: Loop, image_server: ImageServer, tmp_path: Path
) -> None:
    old_url, old_sha = image_server.add("/v1.qcow2", qcow2(tmp_path / "v1.qcow2"))
    new_url, new_sha = image_server.add("/v2.qcow2", qcow2(tmp_path / "v2.qcow2", "32M"))
    needed = {"deb"}
    cache = _cache(tmp_path / "store", needed=needed)
    cache.needed = lambda: set(needed)
    old = aio.run(cache.ensure(_image("deb", uid="u1", url=old_url, sha256=old_sha)))
    new = aio.run(cache.ensure(_image("deb", uid="u2", url=new_url, sha256=new_sha)))
    assert old["disk"] != new["disk"]
    assert Path(old["disk"]).exists(), "a running domain's base image stays"
    assert [h["sha256"] for h in cache.held()] == [old_sha, new_sha]
    # Once no VM here boots from the name, the copy of the older image goes.
    needed.clear()
    aio.run(cache.forget_missing({"deb": new_sha}))
    assert [h["sha256"] for h in cache.held()] == [new_sha]
    assert not Path(old["disk"]).exists()


def test_a_cache_that_cannot_store_the_image_fails_it_as_a_disk_error(
    aio: Loop, image_server: ImageServer, tmp_path: Path
) -> None:
    url, sha = image_server.add("/d.qcow2", qcow2(tmp_path / "d.qcow2"))
    cache = _cache(tmp_path / "store")
    (tmp_path / "store" / "cache" / f"d_{sha[:16]}").write_text("not a folder")
    with pytest.raises(ImageError) as e:
        aio.run(cache.ensure(_image("d", url=url, sha256=sha)))
    assert e.value.reason == "DiskError" and "could not store it" in str(e.value)
    assert isinstance(cache.report, Recorder)
    assert [r.event for _, r in cache.report.reports][-1] is ImportEvent.FAILED

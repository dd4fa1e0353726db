"""VMImages end to end: a real control plane, real agent processes on libvirt's test driver
with real files (`KUBENOVA_STORAGE=files`: qcow2 overlays on the cached images), and a loopback
HTTP server playing the image server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kubenova.api import constants
from kubenova.dev.cluster import free_port
from tests.e2e.bind import bind, flavor_yaml, phase, vm, vm_yaml
from tests.e2e.test_agent import _scrape
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.imageserver import ImageServer, Stall, qcow2
from tests.fixtures.libvirt import AgentProcess, Agents, unique_host
from tests.fixtures.operator import Operators

pytestmark = [pytest.mark.e2e, pytest.mark.libvirt]


def _image_yaml(name: str, **spec: Any) -> str:
    body = {
        "apiVersion": constants.API_VERSION,
        "kind": "VMImage",
        "metadata": {"name": name},
        "spec": spec,
    }
    return json.dumps(body)


def _image(cluster: LocalCluster, name: str) -> dict[str, Any]:
    proc = cluster.kubectl("get", "vmimages.kubenova.io", name, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def _image_status(cluster: LocalCluster, name: str) -> dict[str, Any]:
    status: dict[str, Any] = _image(cluster, name).get("status") or {}
    return status


def _host_images(cluster: LocalCluster, host: str) -> list[dict[str, Any]]:
    proc = cluster.kubectl("get", "hosts.kubenova.io", host, "-o", "json", check=False)
    if proc.returncode != 0:
        return []
    images: list[dict[str, Any]] = json.loads(proc.stdout).get("status", {}).get("images") or []
    return images


def _events(cluster: LocalCluster, name: str) -> list[str]:
    out = cluster.kubectl(
        "get", "events", "-n", "default", "-o", "json",
        f"--field-selector=involvedObject.name={name},involvedObject.kind=VMImage",
    ).stdout  # fmt: skip
    return [e["reason"] for e in json.loads(out)["items"]]


class Env:
    """One test's images (deleted afterwards: they are cluster-scoped), flavor and host."""

    def __init__(self, cluster: LocalCluster, ns: str, agents: Agents, tmp: Path) -> None:
        self.cluster = cluster
        self.ns = ns
        self.agents = agents
        self.store = tmp / "images"
        self.store.mkdir()
        self.state = tmp / "domains"
        self.flavor = f"f-{ns}"
        self.images: list[str] = []
        self.host = unique_host()
        cluster.kubectl("apply", "-f", "-", input=flavor_yaml(self.flavor, memory="256Mi"))

    def image(self, **spec: Any) -> str:
        name = f"img-{unique_host('x')}"
        self.cluster.kubectl("apply", "-f", "-", input=_image_yaml(name, **spec))
        self.images.append(name)
        return name

    def agent(self, host_xml: Path, **env: str) -> AgentProcess:
        return self.agents.start(
            self.host, f"test://{host_xml}",
            KUBENOVA_STORAGE="files", KUBENOVA_IMAGE_DIR=str(self.store),
            KUBENOVA_STATE_DIR=str(self.state), **env,
        )  # fmt: skip

    def vm(self, name: str, boot: dict[str, Any]) -> None:
        body = vm_yaml(name, self.ns, self.flavor, boot=boot)
        self.cluster.kubectl("apply", "-f", "-", input=body)
        bind(self.cluster, self.ns, name, self.host)

    def cleanup(self) -> None:
        for name in self.images:
            self.cluster.kubectl("delete", "vmimages.kubenova.io", name, "--wait=false")


@pytest.fixture
def env(test_cluster: LocalCluster, namespace: str, agents: Agents, tmp_path: Path) -> Any:
    e = Env(test_cluster, namespace, agents, tmp_path)
    yield e
    e.cleanup()


def test_an_image_is_imported_verified_and_booted_from_and_the_host_reports_it(
    env: Env, image_server: ImageServer, test_host: Path, tmp_path: Path, operators: Operators
) -> None:
    data = qcow2(tmp_path / "deb.qcow2")
    url, sha = image_server.add("/deb.qcow2", data)
    name = env.image(url=url, sha256=sha, format="qcow2")
    assert _image_status(env.cluster, name).get("phase", "Pending") == "Pending"
    operators.start("op-images")
    port = free_port()
    agent = env.agent(test_host, KUBENOVA_METRICS_PORT=str(port))
    env.vm("web-1", {"image": name})

    wait_for("web-1 Running", lambda: phase(env.cluster, env.ns, "web-1") == "Running", 60)
    status = wait_for(
        "the VMImage Ready",
        lambda: (s := _image_status(env.cluster, name)).get("phase") == "Ready" and s,
    )
    cached = env.store / "cache" / f"{name}_{sha[:16]}" / "disk"
    assert (status["size"], status["sha256"]) == (cached.stat().st_size, sha)
    assert cached.read_bytes() == data
    assert [c["status"] for c in status["conditions"] if c["type"] == "Ready"] == ["True"]
    held = wait_for("the Host reporting it", lambda: _host_images(env.cluster, env.host))
    assert held == [{"name": name, "sha256": sha, "size": len(data)}]
    # The operator lists the hosts holding it, from their Host status.images.
    wait_for("status.hosts from the operator", lambda: (
        (s := _image_status(env.cluster, name)).get("hosts") == [env.host] and s["hostCount"] == 1
    ))  # fmt: skip
    # The VM's overlay is backed by the verified copy, nothing else.
    overlay = env.state / f"{env.ns}_web-1" / "root.qcow2"
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(overlay)], capture_output=True, check=True
        ).stdout
    )
    assert info["backing-filename"] == str(cached)
    wait_for("Importing and Imported events", lambda: {"Importing", "Imported"} <= set(
        _events(env.cluster, name)
    ))  # fmt: skip
    samples = _scrape(port)
    host = f'host="{env.host}"'
    assert samples[f"kubenova_agent_image_bytes_downloaded_total{{{host}}}"] == len(data)
    assert samples[f'kubenova_agent_image_import_seconds_count{{{host},result="ok"}}'] == 1
    assert samples[f"kubenova_agent_image_cache_bytes{{{host}}}"] == len(data)
    printed = env.cluster.kubectl("get", "vmimages.kubenova.io", name).stdout
    assert "Ready" in printed and str(len(data)) in printed
    assert agent.alive()


def test_a_wrong_checksum_fails_the_image_with_the_reason_and_nothing_is_used(
    env: Env, image_server: ImageServer, test_host: Path, tmp_path: Path
) -> None:
    data = qcow2(tmp_path / "bad.qcow2")
    url, sha = image_server.add("/bad.qcow2", data)
    wrong = "0" * 64
    name = env.image(url=url, sha256=wrong)
    port = free_port()
    env.agent(test_host, KUBENOVA_METRICS_PORT=str(port))
    env.vm("web-1", {"image": name})

    status = wait_for(
        "the VMImage Failed",
        lambda: (s := _image_status(env.cluster, name)).get("phase") == "Failed" and s,
        60,
    )
    assert status["reason"] == "ChecksumMismatch"
    assert f"checksum mismatch: expected {wrong}, got {sha}" in status["message"]
    assert status.get("hosts", []) == []
    failed = wait_for(
        "web-1 Failed",
        lambda: (
            (o := vm(env.cluster, env.ns, "web-1")) and o["status"].get("phase") == "Failed" and o
        ),
    )
    assert "checksum mismatch" in failed["status"]["reason"]
    assert not failed["status"].get("domainUUID"), "no domain was defined"
    folder = env.store / "cache" / f"{name}_{wrong[:16]}"
    assert not (folder / "disk").exists()
    assert not list(folder.glob("*.part")), "the bad download is deleted"
    assert not (env.state / f"{env.ns}_web-1" / "root.qcow2").exists()
    assert "ImportFailed" in wait_for("an ImportFailed event", lambda: _events(env.cluster, name))
    samples = _scrape(port)
    labels = f'host="{env.host}",reason="ChecksumMismatch"'
    assert samples[f"kubenova_agent_image_import_failures_total{{{labels}}}"] == 1
    assert (
        samples[f'kubenova_agent_image_import_seconds_count{{host="{env.host}",result="failed"}}']
        == 1
    )
    assert _host_images(env.cluster, env.host) == []


def test_twenty_vms_starting_at_once_download_the_image_once(
    env: Env, image_server: ImageServer, test_host: Path, tmp_path: Path
) -> None:
    data = qcow2(tmp_path / "storm.qcow2", fill=True)
    url, sha = image_server.add("/storm.qcow2", data)
    name = env.image(url=url, sha256=sha)
    # The server holds the download back until every VM is bound and waiting.
    stall = Stall(after=len(data) // 3)
    image_server.stalls["/storm.qcow2"] = stall
    names = [f"vm-{i}" for i in range(20)]
    for n in names:
        env.vm(n, {"image": name})
    env.agent(test_host, KUBENOVA_WORKERS="8")
    assert stall.reached.wait(60), "the agent never started the download"
    stall.release.set()

    def running() -> int:
        return sum(phase(env.cluster, env.ns, n) == "Running" for n in names)

    wait_for("all 20 VMs Running", lambda: running() == 20, 120, 0.5)
    assert len(image_server.gets("/storm.qcow2")) == 1
    assert _image_status(env.cluster, name)["phase"] == "Ready"


def test_an_agent_killed_mid_download_never_uses_the_partial_file_and_finishes_it(
    env: Env, image_server: ImageServer, test_host: Path, tmp_path: Path
) -> None:
    data = qcow2(tmp_path / "big.qcow2", fill=True)
    url, sha = image_server.add("/big.qcow2", data)
    name = env.image(url=url, sha256=sha)
    stall = Stall(after=len(data) // 2)
    image_server.stalls["/big.qcow2"] = stall
    # One worker: the stalled download must not hold it (the VM is looked at again later).
    first = env.agent(test_host, KUBENOVA_WORKERS="1")
    env.vm("web-1", {"image": name})
    assert stall.reached.wait(60), "the agent never started the download"
    folder = env.store / "cache" / f"{name}_{sha[:16]}"
    part = folder / "disk.part"
    wait_for("half the image on disk", lambda: part.exists() and part.stat().st_size == stall.after)
    assert _image_status(env.cluster, name)["phase"] == "Importing"
    waiting = wait_for("web-1 Starting, waiting for its image", lambda: (
        (o := vm(env.cluster, env.ns, "web-1")) and o["status"].get("phase") == "Starting" and o
    ))  # fmt: skip
    assert waiting["status"]["reason"] == f"waiting for VMImage {name} to arrive on this host"
    # A name no VMImage has is still a file an admin put in the image store.
    qcow2(env.store / "local.qcow2")
    env.vm("local-1", {"image": "local.qcow2"})
    wait_for(
        "local-1 Running meanwhile", lambda: phase(env.cluster, env.ns, "local-1") == "Running"
    )
    assert not list((env.store / "cache").glob("local.qcow2*"))
    first.kill()

    assert not (folder / "disk").exists() and not (folder / "entry.json").exists()
    assert phase(env.cluster, env.ns, "web-1") != "Running"
    assert not (env.state / f"{env.ns}_web-1" / "root.qcow2").exists(), "no overlay on a .part"
    stall.release.set()

    env.agent(test_host)
    wait_for("web-1 Running", lambda: phase(env.cluster, env.ns, "web-1") == "Running", 60)
    assert (folder / "disk").read_bytes() == data
    assert not part.exists()
    status = _image_status(env.cluster, name)
    assert (status["phase"], status["sha256"]) == ("Ready", sha)
    ranges = [r.range for r in image_server.gets("/big.qcow2")]
    assert ranges == [None, f"bytes={stall.after}-"], "the restarted agent resumed the download"


def test_a_kernel_pair_image_boots_the_tiny_guest_from_the_cache(
    env: Env, image_server: ImageServer, test_host: Path, tiny_guest: Path
) -> None:
    k_url, k_sha = image_server.add("/vmlinuz", (tiny_guest / "vmlinuz").read_bytes())
    i_url, i_sha = image_server.add("/initrd", (tiny_guest / "initrd.img").read_bytes())
    name = env.image(
        kernel={
            "kernel": {"url": k_url, "sha256": k_sha},
            "initrd": {"url": i_url, "sha256": i_sha},
        }
    )
    env.agent(test_host)
    env.vm("tiny-1", {"kernel": {"name": name, "cmdline": "console=ttyS0"}})
    wait_for("tiny-1 Running", lambda: phase(env.cluster, env.ns, "tiny-1") == "Running", 60)
    (folder,) = (env.store / "cache").glob(f"{name}_*")
    assert (folder / "vmlinuz").read_bytes() == (tiny_guest / "vmlinuz").read_bytes()
    assert (folder / "initrd").read_bytes() == (tiny_guest / "initrd.img").read_bytes()
    assert _image_status(env.cluster, name)["phase"] == "Ready"
    # A kernel pair named as a disk image is refused, naming the field to use.
    env.vm("wrong-1", {"image": name})
    failed = wait_for("wrong-1 Failed", lambda: (
        (o := vm(env.cluster, env.ns, "wrong-1")) and o["status"].get("phase") == "Failed" and o
    ))  # fmt: skip
    assert (
        f"spec.boot.image {name!r}: VMImage {name} is a kernel + initrd pair; name it in "
        "spec.boot.kernel.name"
    ) in failed["status"]["reason"]


def test_an_image_is_pre_cached_on_the_hosts_of_a_pool_without_any_vm(
    env: Env, image_server: ImageServer, test_host: Path, tmp_path: Path
) -> None:
    data = qcow2(tmp_path / "pre.qcow2")
    url, sha = image_server.add("/pre.qcow2", data)
    pool = f"pool-{env.ns}"
    body = {
        "apiVersion": constants.API_VERSION,
        "kind": "ResourcePool",
        "metadata": {"name": pool},
        "spec": {"hostSelector": {"matchLabels": {"kubenova.io/class": env.ns}}},
    }
    env.cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
    try:
        name = env.image(url=url, sha256=sha, preCache={"pools": [pool]})
        other = env.image(url=url, sha256=sha, preCache={"pools": ["some-other-pool"]})
        env.agent(test_host, KUBENOVA_HOST_LABELS=f"kubenova.io/class={env.ns}")
        held = wait_for(
            "the pre-cached image on the Host", lambda: _host_images(env.cluster, env.host), 60
        )
        assert [h["name"] for h in held] == [name]
        assert _image_status(env.cluster, name)["phase"] == "Ready"
        assert not list((env.store / "cache").glob(f"{other}_*"))
        assert len(image_server.gets("/pre.qcow2")) == 1
    finally:
        env.cluster.kubectl("delete", "resourcepool", pool, "--wait=false")


def test_the_operator_lists_every_host_holding_an_image_and_drops_a_deleted_one(
    env: Env,
    image_server: ImageServer,
    test_host: Path,
    tmp_path: Path,
    operators: Operators,
) -> None:
    data = qcow2(tmp_path / "two.qcow2")
    url, sha = image_server.add("/two.qcow2", data)
    pool = f"pool2-{env.ns}"
    body = {
        "apiVersion": constants.API_VERSION,
        "kind": "ResourcePool",
        "metadata": {"name": pool},
        "spec": {"hostSelector": {"matchLabels": {"kubenova.io/class": f"two-{env.ns}"}}},
    }
    env.cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
    try:
        operators.start("op-holders")
        name = env.image(url=url, sha256=sha, preCache={"pools": [pool]})
        hosts = sorted(unique_host() for _ in range(2))
        agents = []
        for h in hosts:
            store = tmp_path / f"store-{h}"
            store.mkdir()
            settings = {
                "KUBENOVA_STORAGE": "files",
                "KUBENOVA_IMAGE_DIR": str(store),
                "KUBENOVA_STATE_DIR": str(tmp_path / h),
                "KUBENOVA_HOST_LABELS": f"kubenova.io/class=two-{env.ns}",
            }
            agents.append(env.agents.start(h, f"test://{test_host}", **settings))
        wait_for("both hosts in status.hosts", lambda: (
            (s := _image_status(env.cluster, name)).get("hosts") == hosts and s["hostCount"] == 2
        ), 60)  # fmt: skip
        assert len(image_server.gets("/two.qcow2")) == 2, "one download per host"
        agents[1].stop()
        env.cluster.kubectl("delete", "hosts.kubenova.io", hosts[1])
        wait_for("the deleted host dropped", lambda: (
            (s := _image_status(env.cluster, name)).get("hosts") == hosts[:1]
            and s["hostCount"] == 1
        ))  # fmt: skip
    finally:
        env.cluster.kubectl("delete", "resourcepool", pool, "--wait=false")

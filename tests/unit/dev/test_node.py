"""kubenova-dev node's pure parts: the names every node's resources get, the sandbox image's
archive, the control plane's node-mode flags, and refusing bad input before touching anything."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from kubenova.dev import cluster, node

pytestmark = pytest.mark.unit


def test_every_name_derives_from_the_folder_so_down_finds_a_crashed_up() -> None:
    a, again, b = node.Layout(Path("/x/a")), node.Layout(Path("/x/a")), node.Layout(Path("/x/b"))
    assert (a.netns, a.run, a.cgroup(1), a.cni_network(1)) == (
        again.netns,
        again.run,
        again.cgroup(1),
        again.cni_network(1),
    )
    # two folders side by side share no machine-wide name
    assert {a.netns, a.cgroup(1), a.cni_network(1), str(a.run)}.isdisjoint(
        {b.netns, b.cgroup(1), b.cni_network(1), str(b.run)}
    )
    assert a.cgroup(1) != a.cgroup(2) and a.socket(1) != a.socket(2)
    assert len(a.netns) <= 15  # fits where an interface name must, too


def test_the_sandbox_archive_is_a_docker_save_of_one_executable_layer() -> None:
    data = node.docker_archive("localhost/pause:3.10", {"pause": b"\x7fELF..."}, ["/pause"])
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        [entry] = json.loads(t.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert entry["RepoTags"] == ["localhost/pause:3.10"]
        config_bytes = t.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        layer_bytes = t.extractfile(entry["Layers"][0]).read()  # type: ignore[union-attr]
    config = json.loads(config_bytes)
    assert entry["Config"] == hashlib.sha256(config_bytes).hexdigest() + ".json"
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]
    assert config["config"]["Entrypoint"] == ["/pause"]
    with tarfile.open(fileobj=io.BytesIO(layer_bytes)) as layer:
        member = layer.getmember("pause")
        assert member.mode == 0o755 and member.size == len(b"\x7fELF...")


def test_node_mode_turns_on_what_kubelets_need_and_nothing_else() -> None:
    apiserver = ["kube-apiserver", "--disable-admission-plugins=ServiceAccount", "--v=0"]
    flags = cluster._node_argv("kube-apiserver", apiserver)
    assert "--disable-admission-plugins=ServiceAccount" not in flags
    assert "--enable-aggregator-routing=true" in flags and "--v=0" in flags
    assert cluster._node_argv("kube-apiserver", flags) == flags  # restart() re-applies it
    kcm = cluster._node_argv("kube-controller-manager", ["kcm", "--controllers=x"])
    controllers = kcm[1].removeprefix("--controllers=").split(",")
    assert controllers == [*cluster.KCM_CONTROLLERS, *cluster.NODE_CONTROLLERS]
    assert cluster._node_argv("etcd", ["etcd", "--a"]) == ["etcd", "--a"]


@pytest.mark.parametrize("count", [0, 10])
def test_up_refuses_a_node_count_it_has_no_addresses_for(tmp_path: Path, count: int) -> None:
    with pytest.raises(node.NodeError, match=f"--nodes {count}: between 1 and 9"):
        node.Nodes(tmp_path / "nodes").up(count)
    assert not (tmp_path / "nodes").exists()

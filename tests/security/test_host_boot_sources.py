"""Boot sources are names, never paths (issue 13, item 1). A tenant who writes a host path as
`spec.boot.image` (another tenant's disk: `../domains/<ns>_<vm>/root.qcow2`) or as the kernel
and initrd (`/etc/kubernetes/pki/ca.key`) is refused by the API server, naming the field; and
the agent, given a plain name whose real path leaves its image store (an admin's symlink),
refuses it too and creates nothing. Real control plane and webhooks; a real agent on test:///.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.bind import bind, vm
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.libvirt import Agents
from tests.security import hostkit
from tests.security.hostkit import flavor

__all__ = ["flavor"]  # a fixture used by name

pytestmark = [pytest.mark.apiserver, pytest.mark.libvirt, pytest.mark.e2e]

PLAIN = "must be a plain name, not a path"


@pytest.mark.parametrize(
    "image",
    [
        "../domains/{ns}_victim/root.qcow2",
        "/var/lib/kubenova/domains/{ns}_victim/root.qcow2",
        "debian-12.qcow2/../../../etc/shadow",
        "..",
    ],
)
def test_an_image_that_is_a_path_is_refused_and_no_vm_is_created(
    test_cluster: LocalCluster, wh_namespace: str, flavor: str, image: str
) -> None:
    doc = hostkit.vm_doc("thief", wh_namespace, flavor, boot={"image": image.format(ns="t")})
    code, err = hostkit.apply(test_cluster, doc)
    assert code != 0, "a host path as spec.boot.image was admitted"
    assert "spec.boot.image" in err and PLAIN in err, err
    assert vm(test_cluster, wh_namespace, "thief") is None


def test_kernel_and_initrd_host_paths_are_refused_and_no_vm_is_created(
    test_cluster: LocalCluster, wh_namespace: str, flavor: str
) -> None:
    # The manifest of today's attack: any file of the host as kernel and initrd.
    paths = {"kernel": "/boot/vmlinuz", "initrd": "/etc/kubernetes/pki/ca.key"}
    code, err = hostkit.apply(
        test_cluster, hostkit.vm_doc("thief", wh_namespace, flavor, boot={"kernel": paths})
    )
    assert code != 0, "host paths as kernel and initrd were admitted"
    assert "spec.boot.kernel" in err, err
    assert vm(test_cluster, wh_namespace, "thief") is None
    # The kernel pair's name is a plain name too.
    named = {"kernel": {"name": "../../../etc/kubernetes/pki"}}
    code, err = hostkit.apply(
        test_cluster, hostkit.vm_doc("thief", wh_namespace, flavor, boot=named)
    )
    assert code != 0
    assert "spec.boot.kernel.name" in err and PLAIN in err, err
    assert vm(test_cluster, wh_namespace, "thief") is None


def test_a_plain_image_name_is_admitted(
    test_cluster: LocalCluster, wh_namespace: str, flavor: str
) -> None:
    code, err = hostkit.apply(test_cluster, hostkit.vm_doc("fine", wh_namespace, flavor))
    assert code == 0, err
    kernel = {"kernel": {"name": "tiny", "cmdline": "console=ttyS0 quiet"}}
    code, err = hostkit.apply(
        test_cluster, hostkit.vm_doc("tiny", wh_namespace, flavor, boot=kernel)
    )
    assert code == 0, err


def test_the_agent_refuses_names_whose_real_path_leaves_its_image_store(
    test_cluster: LocalCluster, namespace: str, agents: Agents, test_host: Path, tmp_path: Path
) -> None:
    """Defence in depth: names the schema allows, which an admin's links (or a stored object
    from before the schema rule) point out of the store. The agent refuses each, creating no
    folder, overlay or domain; a good image next to them runs."""
    store = hostkit.image_store(tmp_path)
    outside = tmp_path / "elsewhere"
    victim = hostkit.qcow2(outside / "domains" / "t_victim" / "root.qcow2")
    (store / "evil.qcow2").symlink_to(victim)
    (store / "kernels" / "evil").mkdir(parents=True)
    (store / "kernels" / "evil" / "vmlinuz").symlink_to("/etc/hostname")
    (store / "kernels" / "evil" / "initrd").write_bytes(b"initrd")
    (outside / "pair").mkdir()
    for f in ("vmlinuz", "initrd"):
        (outside / "pair" / f).write_bytes(b"x")
    (store / "kernels" / "linked").symlink_to(outside / "pair")
    state = tmp_path / "domains"
    agent = hostkit.start_agent(agents, test_host, store, state)
    flavor = hostkit.new_flavor(test_cluster)
    attacks = {
        "overlay-on-a-victim": ({"image": "evil.qcow2"}, "spec.boot.image 'evil.qcow2'"),
        "kernel-file-link": ({"kernel": {"name": "evil"}}, "spec.boot.kernel.name 'evil'"),
        "kernel-folder-link": ({"kernel": {"name": "linked"}}, "spec.boot.kernel.name 'linked'"),
    }
    for name, (boot, _) in attacks.items():
        code, err = hostkit.apply(test_cluster, hostkit.vm_doc(name, namespace, flavor, boot=boot))
        assert code == 0, err
        bind(test_cluster, namespace, name, agent.host)
    code, err = hostkit.apply(test_cluster, hostkit.vm_doc("good", namespace, flavor))
    assert code == 0, err
    bind(test_cluster, namespace, "good", agent.host)

    hostkit.wait_phase(test_cluster, namespace, "good", "Running")
    for name, (_, field) in attacks.items():
        failed = hostkit.wait_phase(test_cluster, namespace, name, "Failed")
        assert failed["reason"].startswith(field), failed["reason"]
        assert "leads outside the image store" in failed["reason"], failed["reason"]
        assert str(outside) not in failed["reason"], "the tenant does not learn the target"
        assert not failed.get("domainUUID"), "no domain was defined"
        assert not (state / f"{namespace}_{name}").exists(), "no folder or overlay was created"
    wait_for("the Host to count only the good VM's domain", lambda: (
        hostkit.host_domains(test_cluster, agent.host) == 1
    ))  # fmt: skip
    assert (state / f"{namespace}_good" / "root.qcow2").is_file()
    assert json.loads(
        test_cluster.kubectl("get", "vm", "good", "-n", namespace, "-o", "json").stdout
    )["status"]["domainUUID"]
    assert agent.alive(), agent.log_text()[-3000:]

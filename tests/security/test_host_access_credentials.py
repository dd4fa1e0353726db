"""Access credentials (issue 16, item 4): `spec.accessCredentials` names Secrets of SSH public
keys in the VM's own namespace, as KubeVirt's; the VM's agent checks every line and adds the
keys to the guest's cloud-init data, merged with the user's own #cloud-config. Edited keys
reach the seed at the next start. A tenant can name no Secret of another namespace, and a
Secret that holds anything but public keys gives the guest nothing. Real control plane; a real
agent on test:/// that builds real seeds, read back from the ISO with isoinfo."""

from __future__ import annotations

import base64
import email
import json
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.bind import bind, vm
from tests.fixtures.cluster import LocalCluster
from tests.fixtures.libvirt import AgentProcess, Agents
from tests.security import hostkit

pytestmark = [pytest.mark.apiserver, pytest.mark.libvirt, pytest.mark.e2e]

# Real keys (ssh-keygen output), so the agent's blob check sees what a user pastes.
KEY_A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINWEROBVbsZOIean92K5eq+GnJyisZjuf/IRHexdo+jA a@laptop"
KEY_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFrSc72GyCN6n/Ppr9kBKVr0JtE1FyGzMWDWK1AvEzSZ b@laptop"
KEY_C = (
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBAuSUnBph6ekEEPidz"
    "tZQ/e6YwTVGgL1XU8D9T1kVbI7F34A6Tw5L+jCMMNhDbBp6/1ZJ7BG+DV7OS23hWeyrbE= c@ci"
)
USERS_OWN = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOcGVU8J0Pe9yi91xRYyzfEz/Nej4Z44mLWv3mE5EX4C own@desk"
)


def _secret(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def _creds(*secrets: str) -> list[dict[str, Any]]:
    return [{"sshPublicKey": {"source": {"secret": {"secretName": s}}}} for s in secrets]


def _iso_file(seed: Path, name: str) -> str:
    """One file of the NoCloud seed, as the guest's cloud-init reads it."""
    out = subprocess.run(
        ["isoinfo", "-i", str(seed), "-R", "-x", f"/{name}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def host(agents: Agents, test_host: Path, tmp_path: Path) -> tuple[AgentProcess, Path]:
    state = tmp_path / "domains"
    return hostkit.start_agent(agents, test_host, hostkit.image_store(tmp_path), state), state


@pytest.fixture
def other_namespace(test_cluster: LocalCluster) -> Iterator[str]:
    """A second tenant's namespace."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    test_cluster.kubectl("create", "namespace", name)
    yield name
    test_cluster.kubectl("delete", "namespace", name, "--wait=false")


def _set_run(tc: LocalCluster, namespace: str, name: str, strategy: str) -> None:
    tc.kubectl(
        "patch", "vm", name, "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"runStrategy": strategy}}),
    )  # fmt: skip


def test_ssh_keys_from_a_secret_reach_the_guests_cloud_init_data(
    test_cluster: LocalCluster, namespace: str, host: tuple[AgentProcess, Path]
) -> None:
    agent, state = host
    test_cluster.kubectl("apply", "-f", "-", input=json.dumps(_secret(namespace, "team-keys", {
        "alice": f"# alice's laptop\n{KEY_A}\n\n",
        "ci": f"{KEY_B}\r\n{KEY_C}\n",
    })))  # fmt: skip
    flavor = hostkit.new_flavor(test_cluster)
    user_data = f"#cloud-config\nssh_authorized_keys:\n  - {USERS_OWN}\nruncmd:\n  - [touch, /ok]\n"
    doc = hostkit.vm_doc(
        "web", namespace, flavor,
        cloudInit={"userData": user_data}, accessCredentials=_creds("team-keys"),
    )  # fmt: skip
    code, err = hostkit.apply(test_cluster, doc)
    assert code == 0, err
    bind(test_cluster, namespace, "web", agent.host)
    hostkit.wait_phase(test_cluster, namespace, "web", "Running")
    obj = vm(test_cluster, namespace, "web")
    assert obj is not None
    uid = obj["metadata"]["uid"]

    seed = state / f"{namespace}_web" / "seed.iso"
    first = _iso_file(seed, "user-data")
    assert first.startswith("#cloud-config\n"), first[:40]
    config = yaml.safe_load(first)
    # The user's own key first, then the Secret's keys by key name (alice, then ci), in order.
    assert config["ssh_authorized_keys"] == [USERS_OWN, KEY_A, KEY_B, KEY_C]
    assert config["runcmd"] == [["touch", "/ok"]], "the rest of the user's cloud-config stays"
    meta = yaml.safe_load(_iso_file(seed, "meta-data"))
    assert meta["instance-id"].startswith(f"{uid}-"), meta
    assert _mode(seed) == 0o600
    assert _mode(seed.with_name("seed.iso.sha256")) == 0o600

    # Rotate: the Secret now holds one other key. The next start carries it, as a new
    # cloud-init instance (cloud-init applies ssh_authorized_keys once per instance).
    test_cluster.kubectl("apply", "-f", "-", input=json.dumps(_secret(namespace, "team-keys", {
        "alice": KEY_B,
    })))  # fmt: skip
    _set_run(test_cluster, namespace, "web", "Halted")
    hostkit.wait_phase(test_cluster, namespace, "web", "Stopped")
    assert _iso_file(seed, "user-data") == first, "a stopped VM's seed waits for the next start"
    _set_run(test_cluster, namespace, "web", "Always")
    hostkit.wait_phase(test_cluster, namespace, "web", "Running")
    config = yaml.safe_load(_iso_file(seed, "user-data"))
    assert config["ssh_authorized_keys"] == [USERS_OWN, KEY_B]
    rotated = yaml.safe_load(_iso_file(seed, "meta-data"))
    assert rotated["instance-id"].startswith(f"{uid}-")
    assert rotated["instance-id"] != meta["instance-id"], "a new key set is a new instance"
    assert agent.alive(), agent.log_text()[-3000:]


def test_a_script_user_data_gets_the_keys_in_a_multipart_message(
    test_cluster: LocalCluster, namespace: str, host: tuple[AgentProcess, Path]
) -> None:
    agent, state = host
    test_cluster.kubectl("apply", "-f", "-", input=json.dumps(
        _secret(namespace, "keys", {"key": KEY_A})
    ))  # fmt: skip
    flavor = hostkit.new_flavor(test_cluster)
    script = "#!/bin/sh\necho hello > /hello\n"
    doc = hostkit.vm_doc(
        "web", namespace, flavor,
        cloudInit={"userData": script}, accessCredentials=_creds("keys"),
    )  # fmt: skip
    code, err = hostkit.apply(test_cluster, doc)
    assert code == 0, err
    bind(test_cluster, namespace, "web", agent.host)
    hostkit.wait_phase(test_cluster, namespace, "web", "Running")
    message = email.message_from_string(
        _iso_file(state / f"{namespace}_web" / "seed.iso", "user-data")
    )
    assert message.get_content_type() == "multipart/mixed"
    parts = [p for p in message.walk() if not p.is_multipart()]
    payloads = [(p.get_content_type(), bytes(p.get_payload(decode=True)).decode()) for p in parts]
    assert payloads[0] == ("text/plain", script), "the user's script, unchanged"
    kind, keys = payloads[1]
    assert kind == "text/cloud-config"
    assert yaml.safe_load(keys) == {"ssh_authorized_keys": [KEY_A]}
    assert parts[1]["Merge-Type"] == "list(append)+dict(recurse_array)+str()"


def test_a_secret_that_holds_no_public_key_fails_the_vm_and_reaches_nothing(
    test_cluster: LocalCluster, namespace: str, host: tuple[AgentProcess, Path]
) -> None:
    agent, state = host
    marker = uuid.uuid4().hex
    private = (
        f"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC{marker}\n"
        "-----END OPENSSH PRIVATE KEY-----\n"
    )
    test_cluster.kubectl("apply", "-f", "-", input=json.dumps(
        _secret(namespace, "oops", {"id_ed25519": private})
    ))  # fmt: skip
    flavor = hostkit.new_flavor(test_cluster)
    doc = hostkit.vm_doc("web", namespace, flavor, accessCredentials=_creds("oops"))
    code, err = hostkit.apply(test_cluster, doc)
    assert code == 0, err
    bind(test_cluster, namespace, "web", agent.host)
    failed = hostkit.wait_phase(test_cluster, namespace, "web", "Failed")
    assert failed["reason"] == (
        f"VM {namespace}/web: spec.accessCredentials[0].sshPublicKey.source.secret: Secret "
        "'oops' key 'id_ed25519' line 1 is not an SSH public key (expected '[options] <type> "
        "<base64> [comment]', e.g. 'ssh-ed25519 AAAAC3Nz... user@laptop'); it looks like a "
        "private key: put the public key (the .pub file) in the Secret"
    )
    assert not (state / f"{namespace}_web").exists(), "nothing was created on the host"
    wrote = [agent.log_text()]
    wrote.append(test_cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    wrote.append(test_cluster.kubectl("get", "vm", "-n", namespace, "-o", "json").stdout)
    assert marker not in "\n".join(wrote), "the Secret's content leaked"

    # Fixed in the Secret, the VM runs (the agent retries with back-off).
    test_cluster.kubectl("apply", "-f", "-", input=json.dumps(
        _secret(namespace, "oops", {"id_ed25519.pub": KEY_A})
    ))  # fmt: skip
    hostkit.wait_phase(test_cluster, namespace, "web", "Running")
    seed = state / f"{namespace}_web" / "seed.iso"
    assert yaml.safe_load(_iso_file(seed, "user-data")) == {"ssh_authorized_keys": [KEY_A]}


def test_a_secret_of_another_namespace_is_never_read(
    test_cluster: LocalCluster,
    namespace: str,
    other_namespace: str,
    host: tuple[AgentProcess, Path],
) -> None:
    """The victim has a Secret `keys`; the attacker's VM names `keys`: the agent looks only in
    the attacker's namespace, where there is none."""
    agent, state = host
    test_cluster.kubectl("apply", "-f", "-", input=json.dumps(
        _secret(other_namespace, "keys", {"key": KEY_C})
    ))  # fmt: skip
    flavor = hostkit.new_flavor(test_cluster)
    doc = hostkit.vm_doc("web", namespace, flavor, accessCredentials=_creds("keys"))
    code, err = hostkit.apply(test_cluster, doc)
    assert code == 0, err
    bind(test_cluster, namespace, "web", agent.host)
    failed = hostkit.wait_phase(test_cluster, namespace, "web", "Failed")
    assert failed["reason"] == (
        f"VM {namespace}/web: spec.accessCredentials[0].sshPublicKey.source.secret: Secret "
        f"'keys' does not exist in namespace {namespace}; create it with SSH public keys (one "
        "per line) in its data"
    )
    assert not (state / f"{namespace}_web").exists()


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        (
            {"secretName": "keys", "namespace": "kube-system"},
            'unknown field "spec.accessCredentials[0].sshPublicKey.source.secret.namespace"',
        ),
        ({"secretName": "../kube-system/keys"}, "must be a plain name"),
        ({"secretName": "kube-system/keys"}, "must be a plain name"),
        ({"secretName": ""}, "spec.accessCredentials[0].sshPublicKey.source.secret.secretName"),
    ],
)
def test_a_secret_outside_the_vms_namespace_cannot_be_named(
    test_cluster: LocalCluster, namespace: str, secret: dict[str, str], says: str
) -> None:
    cred = [{"sshPublicKey": {"source": {"secret": secret}}}]
    doc = hostkit.vm_doc("web", namespace, "any", accessCredentials=cred)
    code, err = hostkit.apply(test_cluster, doc)
    assert code != 0
    assert says in err, err
    assert vm(test_cluster, namespace, "web") is None


def test_the_list_of_secrets_is_fixed_once_the_vm_exists(
    test_cluster: LocalCluster, namespace: str
) -> None:
    code, err = hostkit.apply(test_cluster, hostkit.vm_doc("a", namespace, "any"))
    assert code == 0, err
    code, err = hostkit.apply(
        test_cluster, hostkit.vm_doc("a", namespace, "any", accessCredentials=_creds("k"))
    )
    assert code != 0
    assert "accessCredentials is fixed once the VM exists; rotate keys by editing the Secret" in err
    doc = hostkit.vm_doc("b", namespace, "any", accessCredentials=_creds("k"))
    code, err = hostkit.apply(test_cluster, doc)
    assert code == 0, err
    doc["spec"]["accessCredentials"] = _creds("other")
    code, err = hostkit.apply(test_cluster, doc)
    assert code != 0
    assert "accessCredentials is fixed once the VM exists" in err
    found = vm(test_cluster, namespace, "b")
    assert found is not None
    assert found["spec"]["accessCredentials"] == _creds("k"), "the refused change left nothing"

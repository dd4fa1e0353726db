"""The serial console end to end: the tiny guest under qemu, its agent serving consoles, the
console server registered as an aggregated API, and `kubectl vm console` run as users with
client certificates. Everything goes through kube-apiserver, which authorizes
`virtualmachines/console` in `subresources.kubenova.io` by RBAC.

One test walks the whole story on one VM (booting a guest costs 10-20 s here): a command
typed by one viewer is answered on both viewers' screens; a user without the permission gets
403, and so does a permitted user for another namespace's VM; Ctrl-] detaches; the VM gets
an Event per session naming the user; the console server counts sessions and bytes; once the
VM stopped, attaching is refused with the reason and the log is still there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.e2e.bind import bind, phase
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.console import Console
from tests.fixtures.libvirt import TINY_KERNEL, Agents, start_qemu_guest

pytestmark = [pytest.mark.libvirt, pytest.mark.slow, pytest.mark.e2e]

MARKER = "KUBENOVA-GUEST-READY"
# Typed as `echo $((6*7))-answer`: the terminal echoes what was typed, so only the shell's
# arithmetic makes "42-answer" appear.
COMMAND = b"echo $((6*7))-answer\r"
ANSWER = b"42-answer"
CONSOLE_ROLE = "kubenova-test-console-user"


class Viewer:
    """`kubectl vm console` as a process (the plugin as installed: hack/kubectl-vm's module),
    its stdout collected by a thread."""

    def __init__(self, kubeconfig: Path, namespace: str, vm: str, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubenova.cli.kubectl_vm", f"--kubeconfig={kubeconfig}",
             "-n", namespace, "console", vm, *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.out = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            self.out += chunk

    def type(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read().decode(errors="replace")


def run_plugin(kubeconfig: Path, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubenova.cli.kubectl_vm", f"--kubeconfig={kubeconfig}",
         "-n", namespace, *args],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def grant_console(cluster: LocalCluster, namespace: str, user: str) -> None:
    """What the chart's `-console-user` ClusterRole grants (aggregated into admin and edit),
    bound to `user` in `namespace` only."""
    docs = [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": CONSOLE_ROLE},
         "rules": [{"apiGroups": ["subresources.kubenova.io"],
                    "resources": ["virtualmachines/console", "virtualmachines/consolelog"],
                    "verbs": ["get", "create"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": f"console-{user}", "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": CONSOLE_ROLE},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]},
    ]  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def events(cluster: LocalCluster, namespace: str, vm: str) -> list[tuple[str, str]]:
    out = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={vm}",
        "-o", "json",
    )  # fmt: skip
    return [(e["reason"], e["message"]) for e in json.loads(out.stdout)["items"]]


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def test_a_user_attaches_to_the_tiny_guest_through_the_api_server(
    test_cluster: LocalCluster,
    namespace: str,
    agents: Agents,
    console: Console,
    libvirtd: str,
    tiny_image_store: Path,
    tmp_path: Path,
) -> None:
    state = tmp_path / "domains"
    host = start_qemu_guest(
        test_cluster, namespace, agents, tiny_image_store, state, "tiny", TINY_KERNEL,
        agent_env=console.agent_env(),
    )  # fmt: skip
    bind(test_cluster, namespace, "tiny", host)
    wait_for("tiny Running", lambda: phase(test_cluster, namespace, "tiny") == "Running", 90)
    serial = state / f"{namespace}_tiny" / "serial.log"
    wait_for("the guest's shell on its serial port", lambda: (
        serial.exists() and b"KUBENOVA-GUEST-SHELL" in serial.read_bytes()
    ), timeout=120, interval=0.2)  # fmt: skip

    alice = console.user_kubeconfig("alice", tmp_path)
    mallory = console.user_kubeconfig("mallory", tmp_path)
    grant_console(test_cluster, namespace, "alice")
    # mallory may read VMs (the built-in view role, into which the chart aggregates VM reads)
    # but not use their consoles.
    test_cluster.kubectl(
        "create", "rolebinding", "mallory-view", "-n", namespace,
        "--clusterrole=view", "--user=mallory",
    )  # fmt: skip
    opened_before = metric(
        console.metrics_port, 'kubenova_console_sessions_total{kind="console",result="opened"}'
    )

    # Two viewers at once: what one types, both see answered.
    t0 = time.monotonic()
    first = Viewer(alice, namespace, "tiny")
    second = Viewer(alice, namespace, "tiny")
    wait_for("both viewers attached", lambda: metric(
        console.metrics_port, "kubenova_console_sessions_open"
    ) >= 2, timeout=30)  # fmt: skip
    attached_after = time.monotonic() - t0
    t1 = time.monotonic()
    first.type(COMMAND)
    wait_for("the guest's answer on the first viewer", lambda: ANSWER in first.out, 30, 0.01)
    answered_after = time.monotonic() - t1
    wait_for("the same answer on the second viewer", lambda: ANSWER in second.out, 30)
    # ... and the guest's own output (it ticks every second) as well as the answer.
    wait_for("the guest's ticks on the second viewer", lambda: b"tick" in second.out, 30)

    # Ctrl-] detaches; the guest runs on.
    first.type(b"\x1d")
    code, err = first.finish()
    assert code == 0 and "[detached]" in err, err
    second.type(b"\x1d")
    code, err = second.finish()
    assert code == 0 and "[detached]" in err, err
    assert phase(test_cluster, namespace, "tiny") == "Running"

    # Without the permission: the API server answers 403 and nothing reaches the guest.
    denied = run_plugin(mallory, namespace, "console", "tiny")
    assert denied.returncode == 1
    assert "403" in denied.stderr and "virtualmachines/console" in denied.stderr, denied.stderr
    denied_log = run_plugin(mallory, namespace, "console", "tiny", "--log")
    assert "403" in denied_log.stderr, denied_log.stderr
    # alice's binding is for her namespace only.
    other = run_plugin(alice, "default", "console", "tiny")
    assert "403" in other.stderr, other.stderr
    # A VM that does not exist in her namespace: 404 from the console server.
    missing = run_plugin(alice, namespace, "console", "nope", "--log")
    assert "404" in missing.stderr and "not found" in missing.stderr, missing.stderr

    # An Event per session naming who; the server counted them and the bytes.
    wait_for("ConsoleOpened and ConsoleClosed events naming alice", lambda: sum(
        1 for reason, message in events(test_cluster, namespace, "tiny")
        if reason in ("ConsoleOpened", "ConsoleClosed") and "alice" in message
    ) >= 4, timeout=30)  # fmt: skip
    opened = metric(
        console.metrics_port, 'kubenova_console_sessions_total{kind="console",result="opened"}'
    )
    assert opened - opened_before == 2
    assert metric(console.metrics_port, 'kubenova_console_bytes_total{direction="in"}') >= len(
        COMMAND
    )

    # Stopped: no console to attach to, the reason says so; the log is still served.
    test_cluster.kubectl(
        "patch", "vm", "tiny", "-n", namespace, "--type=merge",
        "-p", '{"spec":{"runStrategy":"Halted"}}',
    )  # fmt: skip
    wait_for("tiny Stopped", lambda: phase(test_cluster, namespace, "tiny") == "Stopped", 60)
    refused = run_plugin(alice, namespace, "console", "tiny")
    assert refused.returncode == 1 and "409" in refused.stderr, refused.stderr
    assert "--log" in refused.stderr
    logged = run_plugin(alice, namespace, "console", "tiny", "--log")
    assert logged.returncode == 0, logged.stderr
    assert MARKER in logged.stdout and "42-answer" in logged.stdout
    tail = run_plugin(alice, namespace, "console", "tiny", "--log", "--tail", "3")
    assert tail.returncode == 0 and len(tail.stdout.splitlines()) == 3, tail.stdout
    assert tail.stdout.splitlines() == logged.stdout.splitlines()[-3:]
    print(
        f"\nconsole: two viewers attached {attached_after:.2f} s after starting the plugin; "
        f"command to answer through the API server {answered_after * 1000:.0f} ms"
    )

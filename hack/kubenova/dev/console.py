"""The serial console's wiring for a local control plane (docs/console.md): its PKI, the
console server's command line and environment, the agents' console settings, and the
APIService that routes `subresources.kubenova.io` to a console server on loopback; `up` and
`down` run one beside `kubenova-dev cluster up`. Writes files and starts that process.

Without kube-proxy a Service's ClusterIP leads nowhere, and Endpoints may not name
127.0.0.0/8; but the aggregator resolves a Service of type ExternalName to
`externalName:port` itself, so `localhost` reaches a console server on this machine (the
aggregator dials it with its front-proxy client certificate and checks the serving
certificate for `<service>.<namespace>.svc`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubenova.console import protocol
from kubenova.dev import pki

SERVICE = "kubenova-console"
DEV_NAMESPACE = "kubenova-console"
"""Where `up` puts the ExternalName Service."""
CLIENT_NAME = "kubenova-console"
"""The common name of the console server's client certificate, which agents require."""


@dataclass(frozen=True)
class ConsolePKI:
    ca: Path
    """Signs the three below, and nothing else: agents trust the console server by it, and
    the console server the agents."""
    server: pki.KeyPair
    """The console server's serving certificate (what the aggregator verifies)."""
    client: pki.KeyPair
    """The console server's client certificate at the agents."""
    agent: pki.KeyPair
    """The agents' console serving certificate."""


def console_pki(folder: Path, namespace: str) -> ConsolePKI:
    ca = pki.CertificateAuthority(folder, "kubenova-console-ca")
    hosts = (f"{SERVICE}.{namespace}.svc", "localhost", "127.0.0.1")
    return ConsolePKI(
        ca=ca.cert_path,
        server=ca.issue("server", SERVICE, hosts=hosts),
        client=ca.issue("client", CLIENT_NAME, client=True),
        agent=ca.issue("agent", "kubenova-agent-console", hosts=("localhost", "127.0.0.1")),
    )


def server_argv(p: ConsolePKI, port: int, metrics_port: int = 0) -> list[str]:
    """`python -m kubenova.console` on 127.0.0.1:port; it reads the front-proxy CA from
    kube-system/extension-apiserver-authentication, as on any cluster."""
    return [
        sys.executable, "-m", "kubenova.console",
        "--bind=127.0.0.1", f"--port={port}",
        f"--tls-cert={p.server.cert}", f"--tls-key={p.server.key}",
        f"--agent-ca={p.ca}", f"--agent-cert={p.client.cert}", f"--agent-key={p.client.key}",
        f"--metrics-port={metrics_port}",
    ]  # fmt: skip


def agent_env(p: ConsolePKI, port: int) -> dict[str, str]:
    """An agent's console endpoint on 127.0.0.1:port."""
    return {
        "KUBENOVA_CONSOLE_PORT": str(port),
        "KUBENOVA_CONSOLE_BIND": "127.0.0.1",
        "KUBENOVA_CONSOLE_CERT": str(p.agent.cert),
        "KUBENOVA_CONSOLE_KEY": str(p.agent.key),
        "KUBENOVA_CONSOLE_CLIENT_CA": str(p.ca),
        "KUBENOVA_CONSOLE_CLIENT_NAMES": CLIENT_NAME,
    }


def manifests(namespace: str, port: int, ca: Path) -> list[dict[str, Any]]:
    """The ExternalName Service and the APIService for a console server on localhost."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": namespace},
            "spec": {"type": "ExternalName", "externalName": "localhost",
                     "ports": [{"name": "https", "port": port}]},
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": protocol.APISERVICE},
            "spec": {
                "group": protocol.GROUP,
                "version": protocol.VERSION,
                "groupPriorityMinimum": 1000,
                "versionPriority": 15,
                "service": {"name": SERVICE, "namespace": namespace, "port": port},
                "caBundle": base64.b64encode(ca.read_bytes()).decode(),
            },
        },
    ]  # fmt: skip


# -- `kubenova-dev console up|down`: the console beside `kubenova-dev cluster up` ------------


def up(plane_folder: Path, kubectl: Callable[..., Any], kubeconfig: Path) -> dict[str, str]:
    """Start a console server for the control plane in `plane_folder` (its state in
    `console/` there) and register it; returns the environment an agent needs to serve
    consoles (its port is free now; give each agent its own KUBENOVA_CONSOLE_PORT)."""
    folder = plane_folder / "console"
    down(plane_folder, kubectl)
    folder.mkdir(parents=True, exist_ok=True)
    p = console_pki(folder / "pki", DEV_NAMESPACE)
    port = _free_port()
    with (folder / "console-server.log").open("ab") as out:
        proc = subprocess.Popen(
            server_argv(p, port),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        )
    (folder / "pid").write_text(str(proc.pid))
    kubectl("create", "namespace", DEV_NAMESPACE, check=False)
    items = manifests(DEV_NAMESPACE, port, p.ca)
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                   "items": items}))  # fmt: skip
    kubectl(
        "wait", "--for=condition=Available", "--timeout=60s", f"apiservice/{protocol.APISERVICE}"
    )
    return agent_env(p, _free_port())


def down(plane_folder: Path, kubectl: Callable[..., Any]) -> bool:
    """Stop the console server `up` started and remove its APIService; whether it ran."""
    pid_file = plane_folder / "console" / "pid"
    if not pid_file.exists():
        return False
    kubectl("delete", "apiservice", protocol.APISERVICE, "--ignore-not-found", check=False)
    with contextlib.suppress(ProcessLookupError, ValueError):
        os.killpg(int(pid_file.read_text()), signal.SIGTERM)
    pid_file.unlink()
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port

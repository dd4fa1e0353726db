"""The serial console's wiring for a local control plane (docs/console.md): its PKI, the
console server's command line and environment, the agents' console settings, and the
APIService that routes `subresources.kubenova.io` to a console server on loopback. Writes
files only; the callers start the processes.

Without kube-proxy a Service's ClusterIP leads nowhere, and Endpoints may not name
127.0.0.0/8; but the aggregator resolves a Service of type ExternalName to
`externalName:port` itself, so `localhost` reaches a console server on this machine (the
aggregator dials it with its front-proxy client certificate and checks the serving
certificate for `<service>.<namespace>.svc`).
"""

from __future__ import annotations

import base64
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubenova.console import protocol
from kubenova.dev import pki

SERVICE = "kubenova-console"
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

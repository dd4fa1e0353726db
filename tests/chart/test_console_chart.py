"""The chart's serial console: the APIService and its certificate, who may use a console
(RBAC aggregated into admin and edit, through the real aggregation controller), and what the
console server and the agents are given."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.chart.helm import Helm, by_kind, one
from tests.fixtures.cluster import LocalCluster, wait_for

CONSOLE_RULE = {
    "apiGroups": ["subresources.kubenova.io"],
    "resources": ["virtualmachines/console", "virtualmachines/consolelog"],
    "verbs": ["get", "create"],
}


def test_the_apiservice_trusts_the_console_servers_certificate(helm: Helm, tmp_path: Path) -> None:
    docs = helm.template("kn", "infra")
    (api,) = [d for d in by_kind(docs, "APIService")]
    assert api["metadata"]["name"] == "v1alpha1.subresources.kubenova.io"
    assert api["spec"]["service"] == {"name": "kn-kubenova-console", "namespace": "infra",
                                      "port": 443}  # fmt: skip
    server = one(docs, "Secret", "-console-server-tls")["data"]
    agent = one(docs, "Secret", "-console-agent-tls")["data"]
    assert api["spec"]["caBundle"] == server["ca.crt"] == agent["ca.crt"]
    assert "client.key" not in agent, "agents never hold the console server's key"
    for name, data in (("ca", server["ca.crt"]), ("server", server["tls.crt"])):
        (tmp_path / f"{name}.pem").write_bytes(base64.b64decode(data))
    proc = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "server.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(tmp_path / "server.pem")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    # The aggregator checks the certificate for <service>.<namespace>.svc.
    assert "DNS:kn-kubenova-console.infra.svc" in text

    deployment = one(docs, "Deployment", "-console")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kn-kubenova-console"
    assert pod["securityContext"]["runAsNonRoot"] is True
    agent_env = {
        e["name"]: e.get("value")
        for e in one(docs, "DaemonSet", "-agent")["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert agent_env["KUBENOVA_CONSOLE_ADDRESS"] == "$(POD_IP):8449"


def test_console_off_renders_no_console(helm: Helm) -> None:
    docs = helm.template("kn", "infra", {"console": {"enabled": False}})
    assert not by_kind(docs, "APIService")
    assert not [d for d in docs if "-console" in d["metadata"]["name"]]
    env = one(docs, "DaemonSet", "-agent")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert not [e for e in env if e["name"].startswith("KUBENOVA_CONSOLE")]


def test_edit_and_admin_get_the_console_and_view_does_not(
    helm: Helm, test_cluster: LocalCluster
) -> None:
    """The chart's roles applied to the control plane, whose clusterrole-aggregation
    controller folds them into the built-in roles."""
    docs = helm.template("knc", "infra")
    user_role = one(docs, "ClusterRole", "-console-user")
    assert user_role["rules"] == [CONSOLE_RULE]
    server_role = one(docs, "ClusterRole", "knc-kubenova-console")
    assert all(set(r["verbs"]) <= {"get", "create", "patch"} for r in server_role["rules"])
    test_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(user_role))
    try:

        def rules(role: str) -> list[dict[str, Any]]:
            out = test_cluster.kubectl("get", "clusterrole", role, "-o", "json").stdout
            return list(json.loads(out).get("rules") or [])

        for role in ("edit", "admin"):
            wait_for(f"the console rule aggregated into {role}", lambda r=role: any(
                rule.get("apiGroups") == CONSOLE_RULE["apiGroups"]
                and set(rule.get("resources", [])) == set(CONSOLE_RULE["resources"])
                for rule in rules(r)
            ), timeout=30)  # fmt: skip
        assert not [
            r for r in rules("view") if "subresources.kubenova.io" in (r.get("apiGroups") or [])
        ]
    finally:
        test_cluster.kubectl("delete", "clusterrole", user_role["metadata"]["name"], check=False)

"""The chart keeps every pod but the API server's calls (and Prometheus' scrapes) away from
the webhook port with a NetworkPolicy, and passes the API server's client CA to the webhooks
when given one; both are accepted by the real API server."""

from __future__ import annotations

import pytest
import yaml

from tests.chart.helm import CHART, KUBE_VERSION, Helm, one
from tests.fixtures.cluster import LocalCluster
from tests.fixtures.identities import policy_helm

__all__ = ["policy_helm"]  # a fixture used by name

pytestmark = pytest.mark.apiserver

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_only_the_api_server_and_prometheus_reach_the_webhook_port(
    policy_helm: Helm, test_cluster: LocalCluster
) -> None:
    values = {"webhooks": {"networkPolicy": {
        "apiServerCIDRs": ["0.0.0.0/0", "2001:db8::/64"], "podCIDRs": ["10.244.0.0/16"],
    }}}  # fmt: skip
    docs = policy_helm.template("kn", "default", values)
    policy = one(docs, "NetworkPolicy", "-webhooks")
    pods = one(docs, "Deployment", "-webhooks")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"] == pods
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8443}]
    sources = rule["from"]
    assert sources[0] == {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/16"]}}
    assert sources[1] == {"ipBlock": {"cidr": "2001:db8::/64"}}
    assert sources[2]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    assert len(sources) == 3, "nothing else may connect"

    proc = test_cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(policy), check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_the_api_servers_client_ca_reaches_the_webhooks(
    policy_helm: Helm, test_cluster: LocalCluster
) -> None:
    values = {"webhooks": {"clientAuth": {"caBundle": PEM, "names": ["apiserver-client"]}}}
    docs = policy_helm.template("kn", "default", values)
    pod = one(docs, "Deployment", "-webhooks")["spec"]["template"]
    args = pod["spec"]["containers"][0]["args"]
    assert "--client-ca=/etc/kubenova/client-ca/ca.crt" in args
    assert "--client-name=apiserver-client" in args
    mounts = pod["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "client-ca", "mountPath": "/etc/kubenova/client-ca", "readOnly": True} in mounts
    config = one(docs, "ConfigMap", "-webhooks-client-ca")
    assert config["data"]["ca.crt"] == PEM
    assert pod["metadata"]["annotations"]["checksum/client-ca"]

    # Without one the webhooks are told nothing (they log that callers are unauthenticated).
    plain = one(policy_helm.template("kn", "default"), "Deployment", "-webhooks")
    plain_args = plain["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith("--client-ca") for a in plain_args)

    bad = policy_helm.run(
        "template", "kn", str(CHART), "--kube-version", KUBE_VERSION,
        "--set", "webhooks.clientAuth.caBundle=not-a-pem", check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "caBundle" in bad.stderr, bad.stderr

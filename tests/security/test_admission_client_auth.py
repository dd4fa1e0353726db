"""The admission webhook answers only the API server: a review POSTed by anything else (a pod
that reaches the port, a user with another certificate of the cluster's CA) is refused before
it is read, and charges nothing; the API server itself, presenting its webhook client
certificate, is admitted through it as before."""

from __future__ import annotations

import ssl
import urllib.error
import uuid
from pathlib import Path

import pytest
import yaml

from kubenova.api import constants
from kubenova.dev import pki
from tests.fixtures.cluster import LocalCluster
from tests.fixtures.webhook import (
    Webhook,
    apply,
    module_flavor,
    quota_doc,
    quota_used,
    review,
    vm_manifest,
)

pytestmark = pytest.mark.apiserver


flavor = module_flavor("auth")


def _forged_create(namespace: str, flavor: str) -> dict[str, object]:
    """A review a hostile pod sends: a create that 'charges' the victim a negative amount."""
    vm = vm_manifest(f"forged-{uuid.uuid4().hex[:6]}", namespace, flavor)
    vm["metadata"]["annotations"] = {
        constants.ANNOTATION_QUOTA_CHARGED: '{"flavors":{},"gpus":0,"memory":"-100Gi",'
        '"vcpus":-100,"vms":0}'
    }
    return review("CREATE", vm)


def test_a_review_without_the_api_servers_certificate_is_refused_and_charges_nothing(
    test_cluster: LocalCluster, webhook: Webhook, wh_namespace: str, flavor: str, tmp_path: Path
) -> None:
    apply(test_cluster, quota_doc(wh_namespace, vms=5, vcpus=10, memory="10Gi"))
    test_cluster.kubectl("apply", "-f", "-", input=_vm_yaml(wh_namespace, flavor, "paid"))
    before = quota_used(test_cluster, wh_namespace)
    assert before["vms"] == 1 and before["vcpus"] == 2, before

    # No certificate at all: the pod-on-the-network case.
    reply = webhook.post("/validate", _forged_create(wh_namespace, flavor))
    assert reply.status == 401, reply
    assert "answers only the Kubernetes API server" in reply.message, reply

    # A certificate of the cluster's CA that is not the API server's (the admin's).
    admin = pki.KeyPair(
        test_cluster.plane.folder / "pki" / "admin.crt",
        test_cluster.plane.folder / "pki" / "admin.key",
    )
    reply = webhook.post("/validate", _forged_create(wh_namespace, flavor), client=admin)
    assert reply.status == 403, reply
    assert "'kubenova-admin' may not ask for admission reviews" in reply.message, reply

    # A certificate of another CA does not even complete the handshake.
    stranger = pki.CertificateAuthority(tmp_path / "other-ca", name="stranger").issue(
        "client", "kube-apiserver-webhook-client", client=True
    )
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        webhook.post("/validate", _forged_create(wh_namespace, flavor), client=stranger)

    assert quota_used(test_cluster, wh_namespace) == before, "nothing was charged or refunded"

    # Through the API server (which presents its certificate) creates still work and charge.
    test_cluster.kubectl("apply", "-f", "-", input=_vm_yaml(wh_namespace, flavor, "paid-2"))
    after = quota_used(test_cluster, wh_namespace)
    assert (after["vms"], after["vcpus"]) == (2, 4), after


def test_probes_and_scrapes_need_no_certificate(webhook: Webhook) -> None:
    assert webhook.healthy()
    assert "kubenova_webhook_admission_seconds" in webhook.metrics()


def _vm_yaml(namespace: str, flavor: str, name: str) -> str:
    return yaml.safe_dump(vm_manifest(name, namespace, flavor))

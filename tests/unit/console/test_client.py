"""`kubectl vm console`'s client side without a server: the kubeconfig's credentials and
namespace, and names refused before they become a URL."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubenova.cli import console
from kubenova.dev import pki

pytestmark = pytest.mark.unit


def kubeconfig(tmp_path: Path, user: dict[str, str], namespace: str | None = None) -> Path:
    ca = pki.CertificateAuthority(tmp_path / "ca")
    context: dict[str, str] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443",
                                               "certificate-authority": str(ca.cert_path)}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": context}],
    }))  # fmt: skip
    return path


def test_a_token_and_the_contexts_namespace_are_used(tmp_path: Path) -> None:
    ep = console.endpoint(str(kubeconfig(tmp_path, {"token": "s3cret"}, "team-a")), None, None)
    assert ep.server == "https://127.0.0.1:6443"
    assert ep.headers == {"Authorization": "Bearer s3cret"}
    assert ep.namespace == "team-a"
    flagged = console.endpoint(str(kubeconfig(tmp_path, {"token": "t"})), None, "team-b")
    assert flagged.namespace == "team-b"
    assert console.endpoint(str(kubeconfig(tmp_path, {"token": "t"})), None, None).namespace == (
        "default"
    )


@pytest.mark.parametrize("name", ["../other", "web/console", "WEB", "web%2f..", ""])
def test_names_no_vm_can_have_never_become_a_url(tmp_path: Path, name: str) -> None:
    ep = console.endpoint(str(kubeconfig(tmp_path, {"token": "t"})), None, "team-a")
    with pytest.raises(console.ConsoleError, match="not a valid VM name"):
        console._url(ep, name, "console")
    assert console._url(ep, "web-1", "console").endswith(
        "/namespaces/team-a/virtualmachines/web-1/console"
    )

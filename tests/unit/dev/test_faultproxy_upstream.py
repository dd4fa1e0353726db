"""How the fault proxy reads the kubeconfig it forwards as: paths and inline data, the token,
and the user entry its own kubeconfigs keep."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from kubenova.dev.faultproxy import Upstream

pytestmark = pytest.mark.unit


def kubeconfig(tmp_path: Path, cluster: dict[str, str], user: dict[str, str]) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443/", **cluster}}],
        "users": [{"name": "u", "user": user}, {"name": "other", "user": {"token": "no"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "source.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_files_given_by_path_are_used_where_they_are(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    path = kubeconfig(
        tmp_path,
        {"certificate-authority": "pki/ca.crt"},
        {"client-certificate": "pki/admin.crt", "client-key": "pki/admin.key"},
    )
    up = Upstream.from_kubeconfig(path, tmp_path / "scratch")
    assert up.server == "https://127.0.0.1:6443"
    assert up.ca == (tmp_path / "pki" / "ca.crt").resolve()
    assert up.cert == (tmp_path / "pki" / "admin.crt").resolve()
    assert up.key == (tmp_path / "pki" / "admin.key").resolve()
    assert up.token is None


def test_inline_data_is_written_to_private_files(tmp_path: Path) -> None:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    path = kubeconfig(
        tmp_path,
        {"certificate-authority-data": b64("CA")},
        {"client-certificate-data": b64("CERT"), "client-key-data": b64("KEY")},
    )
    up = Upstream.from_kubeconfig(path, tmp_path / "scratch")
    assert up.ca is not None and up.ca.read_text() == "CA"
    assert up.cert is not None and up.cert.read_text() == "CERT"
    assert up.key is not None and up.key.read_text() == "KEY"
    assert up.key.stat().st_mode & 0o077 == 0


def test_a_token_user_is_kept_for_pass_through(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, {}, {"token": "s3cret"})
    up = Upstream.from_kubeconfig(path, tmp_path / "scratch")
    assert up.token == "s3cret" and up.cert is None
    assert up.user == {"token": "s3cret"}  # the context's user, not the other one

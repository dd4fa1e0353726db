"""The agent's settings from the environment."""

from __future__ import annotations

import pytest

from kubenova.node_agent import config

pytestmark = pytest.mark.unit


def test_defaults_need_only_the_host_name() -> None:
    cfg = config.from_env({"NODE_NAME": "h1"})
    assert (cfg.host, cfg.namespace, cfg.libvirt_uri) == ("h1", "kubenova-system", "qemu:///system")
    assert cfg.lease_name == "kubenova-host-h1"
    assert cfg.domains.domain_type == "kvm"
    assert cfg.manage_storage


def test_every_setting_is_read() -> None:
    cfg = config.from_env(
        {
            "NODE_NAME": "h2",
            "KUBENOVA_NAMESPACE": "kn",
            "LIBVIRT_URI": "test:///default",
            "KUBENOVA_DOMAIN_TYPE": "qemu",
            "KUBENOVA_STORAGE": "none",
            "KUBENOVA_HOST_LABELS": "kubenova.io/rack=r1, zone = z",
            "KUBENOVA_HOST_DISK": "2Ti",
            "KUBENOVA_HEARTBEAT_SECONDS": "2.5",
            "KUBENOVA_LEASE_SECONDS": "15",
            "KUBENOVA_ORPHAN_GRACE_SECONDS": "30",
        }
    )
    assert cfg.labels == {"kubenova.io/rack": "r1", "zone": "z"}
    assert cfg.disk_bytes == 2 * 1024**4
    assert (cfg.heartbeat_seconds, cfg.lease_seconds, cfg.orphan_grace_seconds) == (2.5, 15, 30)
    assert not cfg.manage_storage
    assert cfg.domains.domain_type == "qemu"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({}, "NODE_NAME is not set"),
        ({"NODE_NAME": "h", "KUBENOVA_HOST_LABELS": "novalue"}, "KUBENOVA_HOST_LABELS: 'novalue'"),
        ({"NODE_NAME": "h", "KUBENOVA_LEASE_SECONDS": "soon"}, "KUBENOVA_LEASE_SECONDS: 'soon'"),
        ({"NODE_NAME": "h", "KUBENOVA_STORAGE": "ceph"}, "KUBENOVA_STORAGE: 'ceph'"),
    ],
)
def test_a_bad_setting_is_named(env: dict[str, str], says: str) -> None:
    with pytest.raises(config.ConfigError, match=says):
        config.from_env(env)

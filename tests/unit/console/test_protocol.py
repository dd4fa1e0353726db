"""The console's pure parts: paths and hostile names, the front-proxy check, the detach key,
the log's tail."""

from __future__ import annotations

import pytest

from kubenova.console import protocol
from kubenova.console.protocol import ConsoleError, RequestHeaderConfig

pytestmark = pytest.mark.unit


def test_a_console_path_parses_back_to_its_vm() -> None:
    path = protocol.subresource_path("team-a", "web-1.x", protocol.CONSOLE)
    assert path == (
        "/apis/subresources.kubenova.io/v1alpha1/namespaces/team-a/virtualmachines/web-1.x/console"
    )
    target = protocol.parse_path(path)
    assert (target.namespace, target.name, target.subresource) == ("team-a", "web-1.x", "console")
    assert protocol.agent_path(target) == "/v1/namespaces/team-a/virtualmachines/web-1.x/console"


@pytest.mark.parametrize(
    "namespace,name",
    [
        ("team-a", "..%2f..%2fetc"),
        ("team-a", "WEB"),
        ("team-a", "a_b"),
        ("team-a", "x" * 254),
        ("Team", "web"),
        ("team_a", "web"),
        ("a" * 64, "web"),
        ("team-a", "web\n"),
        ("team-a", ""),
    ],
)
def test_names_no_vm_can_have_are_refused_as_not_found(namespace: str, name: str) -> None:
    path = protocol.subresource_path(namespace, name)
    with pytest.raises(ConsoleError) as e:
        protocol.parse_path(path)
    assert e.value.status == 404


@pytest.mark.parametrize(
    "path",
    [
        "/apis/subresources.kubenova.io/v1alpha1/namespaces/a/virtualmachines/b/exec",
        "/apis/subresources.kubenova.io/v1alpha1/namespaces/a/virtualmachines/b/console/x",
        "/apis/subresources.kubenova.io/v1alpha1/namespaces/a/hosts/b/console",
        "/apis/kubenova.io/v1alpha1/namespaces/a/virtualmachines/b/console",
        "/apis/subresources.kubenova.io/v1alpha1/namespaces/a/virtualmachines/../b/console",
    ],
)
def test_other_paths_are_not_found(path: str) -> None:
    with pytest.raises(ConsoleError) as e:
        protocol.parse_path(path)
    assert e.value.status == 404


CONFIG = RequestHeaderConfig("PEM", allowed_names=("front-proxy-client",))


def test_the_front_proxy_vouches_for_the_user_and_groups() -> None:
    caller = protocol.front_proxy_caller(
        CONFIG, ("front-proxy-client",), {"X-Remote-User": "alice", "X-Remote-Group": "a,b"}
    )
    assert caller == protocol.Caller("alice", ("a", "b"))


@pytest.mark.parametrize(
    "names,headers,status",
    [
        ((), {"X-Remote-User": "alice"}, 401),  # no certificate: someone dialled us directly
        (("kubenova-admin",), {"X-Remote-User": "system:admin"}, 403),  # another client cert
        (("front-proxy-client",), {}, 401),  # no user
    ],
)
def test_anyone_but_the_front_proxy_is_refused(
    names: tuple[str, ...], headers: dict[str, str], status: int
) -> None:
    with pytest.raises(ConsoleError) as e:
        protocol.front_proxy_caller(CONFIG, names, headers)
    assert e.value.status == status


def test_the_configmap_kube_apiserver_publishes_is_read() -> None:
    config = RequestHeaderConfig.from_configmap({
        "requestheader-client-ca-file": "PEM",
        "requestheader-allowed-names": '["front-proxy-client"]',
        "requestheader-username-headers": '["X-Remote-User"]',
        "requestheader-group-headers": '["X-Remote-Group"]',
    })  # fmt: skip
    assert config.allowed_names == ("front-proxy-client",)
    with pytest.raises(ValueError, match="requestheader-client-ca-file"):
        RequestHeaderConfig.from_configmap({})


def test_common_names_come_from_the_peer_certificate() -> None:
    peer = {"subject": ((("organizationName", "x"),), (("commonName", "front-proxy-client"),))}
    assert protocol.common_names(peer) == ("front-proxy-client",)
    assert protocol.common_names(None) == ()


def test_the_detach_key_ends_input_and_is_never_sent() -> None:
    d = protocol.Detacher()
    assert d.feed(b"ls\r") == (b"ls\r", False)
    assert d.feed(b"ab\x1dcd") == (b"ab", True)
    assert d.feed(b"more") == (b"", True)
    assert protocol.Detacher().feed(b"\x1d") == (b"", True)


def test_detach_keys_in_caret_notation() -> None:
    assert protocol.parse_detach_key("^]") == 0x1D
    assert protocol.parse_detach_key("^a") == 0x01
    assert protocol.parse_detach_key("~") == ord("~")
    d = protocol.Detacher(protocol.parse_detach_key("^P"))
    assert d.feed(b"x\x1dy\x10z") == (b"x\x1dy", True)
    for bad in ("", "ab", "^1", "é"):
        with pytest.raises(ValueError, match="detach-key"):
            protocol.parse_detach_key(bad)


@pytest.mark.parametrize(
    "data,lines,tail",
    [
        (b"a\nb\nc\n", 2, b"b\nc\n"),
        (b"a\nb\nc", 2, b"b\nc"),
        (b"a\nb\nc\n", 0, b"a\nb\nc\n"),
        (b"a\nb\n", 5, b"a\nb\n"),
        (b"", 3, b""),
        (b"only", 1, b"only"),
    ],
)
def test_the_tail_of_a_log(data: bytes, lines: int, tail: bytes) -> None:
    assert protocol.tail_lines(data, lines) == tail


@pytest.mark.parametrize("raw", ["-1", "x", "1e3", "100001", " 5"])
def test_a_bad_tail_is_a_bad_request(raw: str) -> None:
    with pytest.raises(ConsoleError) as e:
        protocol.parse_tail(raw)
    assert e.value.status == 400
    assert protocol.parse_tail("12") == 12
    assert protocol.parse_tail(None) == 0

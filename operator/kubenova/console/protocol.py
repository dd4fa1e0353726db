"""The console's pure parts, shared by the console server, the agent's console endpoint and
`kubectl vm console`: the subresource paths and their parsing, discovery documents, the
front-proxy checks, the detach key, and the tail of a log. No I/O.

On the wire a console is a WebSocket whose binary messages are raw bytes of the serial port,
in both directions (what the guest printed; what the user typed). There is no framing of our
own: a message boundary means nothing, and a close (with its reason) ends the session.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GROUP = "subresources.kubenova.io"
VERSION = "v1alpha1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
APISERVICE = f"{VERSION}.{GROUP}"
CONSOLE = "console"
CONSOLE_LOG = "consolelog"
SUBRESOURCES = (CONSOLE, CONSOLE_LOG)
DETACH_KEY = 0x1D
"""Ctrl-] (as telnet and `virsh console`): leaves the console, the guest runs on."""
MAX_TAIL_LINES = 100_000
USER_HEADER = "X-Kubenova-User"
"""Who the API server authenticated, passed on by the console server to the agent for its
log and events (the agent trusts only the console server's certificate, not this header)."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class ConsoleError(Exception):
    """A request the console refuses: `status` is the HTTP status, the message says why and
    what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Target:
    """Which VM's console (or log) a request is for."""

    namespace: str
    name: str
    subresource: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def check_names(namespace: str, name: str) -> None:
    """Refuse what is no Kubernetes namespace or VM name (a 404: nothing by that name can
    exist), before it is used anywhere."""
    if not _DNS_LABEL.fullmatch(namespace):
        raise ConsoleError(404, f"namespace {namespace[:80]!r} is not a valid namespace name")
    if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        raise ConsoleError(404, f"virtualmachine {name[:80]!r} is not a valid VM name")


def subresource_path(namespace: str, name: str, subresource: str = CONSOLE) -> str:
    """The API server path of a VM's console subresource."""
    return f"/apis/{GROUP_VERSION}/namespaces/{namespace}/virtualmachines/{name}/{subresource}"


def parse_path(path: str) -> Target:
    """The target of an API path `subresource_path` made; a ConsoleError (404) otherwise."""
    prefix = f"/apis/{GROUP_VERSION}/namespaces/"
    if not path.startswith(prefix):
        raise ConsoleError(404, f"no such path {path[:120]!r}")
    parts = path[len(prefix) :].split("/")
    if len(parts) != 4 or parts[1] != "virtualmachines" or parts[3] not in SUBRESOURCES:
        raise ConsoleError(
            404,
            f"no such path {path[:120]!r}: use .../namespaces/NS/virtualmachines/NAME/"
            f"{CONSOLE} or /{CONSOLE_LOG}",
        )
    namespace, _, name, sub = parts
    check_names(namespace, name)
    return Target(namespace, name, sub)


def agent_path(target: Target) -> str:
    """The same request's path at the agent of the VM's host."""
    return f"/v1/namespaces/{target.namespace}/virtualmachines/{target.name}/{target.subresource}"


def parse_tail(raw: str | None) -> int:
    """`?tail=N` of a log request: lines from the end, 0 for all."""
    if raw is None or raw == "":
        return 0
    if not raw.isdigit() or int(raw) > MAX_TAIL_LINES:
        raise ConsoleError(400, f"tail: {raw[:20]!r} is not a number of lines 0-{MAX_TAIL_LINES}")
    return int(raw)


def tail_lines(data: bytes, lines: int) -> bytes:
    """The last `lines` lines of `data` (all of it for 0); a last line without its newline
    counts."""
    if lines <= 0:
        return data
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    cut = end
    for _ in range(lines):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return data
    return data[cut + 1 :]


# -- front proxy (requestheader) ----------------------------------------------------------


@dataclass(frozen=True)
class RequestHeaderConfig:
    """What kube-apiserver publishes in kube-system/extension-apiserver-authentication: who
    may vouch for a user (the front-proxy client certificate's CA and names) and in which
    headers."""

    client_ca: str
    """PEM."""
    allowed_names: tuple[str, ...] = ()
    """Common names the front-proxy certificate may have; empty: any the CA signed."""
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)

    @classmethod
    def from_configmap(cls, data: Mapping[str, str]) -> RequestHeaderConfig:
        import json

        def listed(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            raw = data.get(key)
            return tuple(json.loads(raw)) if raw else default

        ca = data.get("requestheader-client-ca-file", "")
        if not ca:
            raise ValueError(
                "kube-system/extension-apiserver-authentication has no "
                "requestheader-client-ca-file: start kube-apiserver with "
                "--requestheader-client-ca-file and --proxy-client-cert-file (docs/console.md)"
            )
        return cls(
            client_ca=ca,
            allowed_names=listed("requestheader-allowed-names", ()),
            username_headers=listed("requestheader-username-headers", ("X-Remote-User",)),
            group_headers=listed("requestheader-group-headers", ("X-Remote-Group",)),
        )


@dataclass(frozen=True)
class Caller:
    user: str
    groups: tuple[str, ...]


def front_proxy_caller(
    config: RequestHeaderConfig,
    peer_common_names: Sequence[str],
    headers: Mapping[str, str],
) -> Caller:
    """Who the API server says is calling: only when the TLS peer (already verified against
    `config.client_ca`) is an allowed front proxy, else a ConsoleError (401/403)."""
    if not peer_common_names:
        raise ConsoleError(
            401, "no client certificate: the console is reached through the Kubernetes API"
        )
    if config.allowed_names and not set(peer_common_names) & set(config.allowed_names):
        raise ConsoleError(403, f"client certificate {list(peer_common_names)} is no front proxy")
    user = next((headers[h] for h in config.username_headers if headers.get(h)), "")
    if not user:
        raise ConsoleError(401, "the front proxy named no user")
    groups = tuple(g for h in config.group_headers for g in (headers.get(h) or "").split(",") if g)
    return Caller(user, groups)


def common_names(peercert: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The common names of a certificate as `ssl.SSLSocket.getpeercert()` gives it."""
    if not peercert:
        return ()
    return tuple(
        str(value)
        for rdn in peercert.get("subject", ())
        for key, value in rdn
        if key == "commonName"
    )


# -- discovery ------------------------------------------------------------------------------


def api_resource_list() -> dict[str, Any]:
    """`/apis/subresources.kubenova.io/v1alpha1`: the aggregator's availability check and
    discovery read it."""
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [
            {
                "name": f"virtualmachines/{sub}",
                "singularName": "",
                "namespaced": True,
                "kind": "VirtualMachineConsole",
                "verbs": ["get"],
            }
            for sub in SUBRESOURCES
        ],
    }


def api_group() -> dict[str, Any]:
    version = {"groupVersion": GROUP_VERSION, "version": VERSION}
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [version],
        "preferredVersion": version,
    }


def api_group_list() -> dict[str, Any]:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group()]}


def status(code: int, message: str) -> dict[str, Any]:
    """A metav1.Status, which kubectl and the client libraries show as the error."""
    reasons = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
               409: "Conflict", 502: "BadGateway", 503: "ServiceUnavailable"}  # fmt: skip
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reasons.get(code, "InternalError"),
        "code": code,
    }


# -- the client's keyboard ------------------------------------------------------------------


def parse_detach_key(text: str) -> int:
    """'^]' (caret notation) or a single character → its byte."""
    if len(text) == 2 and text[0] == "^" and 0x40 <= ord(text[1].upper()) <= 0x5F:
        return ord(text[1].upper()) - 0x40
    if len(text) == 1 and ord(text) < 0x80:
        return ord(text)
    raise ValueError(f"--detach-key: {text!r} is not one character or ^X caret notation")


class Detacher:
    """Watches what the user types for the detach key: `feed(chunk)` → what to send to the
    guest, and whether the user detached (the key itself and anything after it are not
    sent)."""

    def __init__(self, key: int = DETACH_KEY) -> None:
        self.key = key
        self.detached = False

    def feed(self, chunk: bytes) -> tuple[bytes, bool]:
        if self.detached:
            return b"", True
        at = chunk.find(bytes([self.key]))
        if at < 0:
            return chunk, False
        self.detached = True
        return chunk[:at], True

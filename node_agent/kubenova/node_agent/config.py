"""The agent's settings, read once from the environment at start-up and passed down. Pure
(takes the environment as a mapping)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubenova.api.quantity import Quantity
from kubenova.node_agent.domain_xml import DomainSettings

DEFAULT_NAMESPACE = "kubenova-system"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class AgentConfig:
    host: str
    """This host's name (NODE_NAME): the Host object, the VM label value, the Lease suffix."""
    namespace: str = DEFAULT_NAMESPACE
    """Where the heartbeat Lease and the agent's events live (KUBENOVA_NAMESPACE)."""
    libvirt_uri: str = "qemu:///system"
    domains: DomainSettings = field(default_factory=DomainSettings)
    manage_storage: bool = True
    """Create overlays, seeds and folders (off for simulated hosts: KUBENOVA_STORAGE=none)."""
    labels: dict[str, str] = field(default_factory=dict)
    """Labels of the Host object besides kubenova.io/hostname."""
    disk_bytes: int | None = None
    """Disk capacity to report; None measures the state folder's file system."""
    heartbeat_seconds: float = 10.0
    lease_seconds: int = 40
    report_seconds: float = 30.0
    resync_seconds: float = 60.0
    orphan_grace_seconds: float = 300.0
    workers: int = 4
    metrics_port: int = 0
    """0: no metrics endpoint."""
    migration_uri: str = ""
    """The libvirt URI other hosts' libvirtd reach this one at (KUBENOVA_MIGRATION_URI);
    empty: this host takes no live migrations."""
    migration_address: str = ""
    """The address of the migration data stream (KUBENOVA_MIGRATION_ADDRESS)."""
    image_cache_bytes: int = 0
    """Size limit of the image cache (`<image store>/cache`, KUBENOVA_IMAGE_CACHE_SIZE, a
    quantity); 0: no limit. Unused images are evicted, least recently used first."""
    console_port: int = 0
    """The console endpoint's port (KUBENOVA_CONSOLE_PORT); 0: no consoles from this host."""
    console_bind: str = "0.0.0.0"
    """The address it listens on (KUBENOVA_CONSOLE_BIND)."""
    console_address: str = ""
    """host:port the console server reaches it at, reported in Host status.console
    (KUBENOVA_CONSOLE_ADDRESS; default <console_bind>:<console_port>)."""
    console_cert: str = ""
    console_key: str = ""
    """Its serving certificate and key (KUBENOVA_CONSOLE_CERT, KUBENOVA_CONSOLE_KEY)."""
    console_client_ca: str = ""
    """The CA of the console server's client certificate (KUBENOVA_CONSOLE_CLIENT_CA)."""
    console_client_names: tuple[str, ...] = ("kubenova-console",)
    """Common names accepted from it (KUBENOVA_CONSOLE_CLIENT_NAMES, comma-separated)."""

    @property
    def lease_name(self) -> str:
        return f"kubenova-host-{self.host}"


def parse_labels(text: str) -> dict[str, str]:
    """'a=1,b=2' → {'a': '1', 'b': '2'}."""
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ConfigError(f"KUBENOVA_HOST_LABELS: {part!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels


def from_env(env: Mapping[str, str]) -> AgentConfig:
    host = env.get("NODE_NAME", "")
    if not host:
        raise ConfigError("NODE_NAME is not set: the agent needs the name of its host")

    def number(name: str, default: float) -> float:
        raw = env.get(name)
        try:
            return float(raw) if raw else default
        except ValueError:
            raise ConfigError(f"{name}: {raw!r} is not a number") from None

    disk = env.get("KUBENOVA_HOST_DISK")
    cache_size = env.get("KUBENOVA_IMAGE_CACHE_SIZE", "")
    try:
        cache_bytes = Quantity(cache_size).to_int() if cache_size else 0
    except ValueError as e:
        raise ConfigError(f"KUBENOVA_IMAGE_CACHE_SIZE: {cache_size!r}: {e}") from None
    storage = env.get("KUBENOVA_STORAGE", "files")
    if storage not in ("files", "none"):
        raise ConfigError(f"KUBENOVA_STORAGE: {storage!r} is not 'files' or 'none'")
    return AgentConfig(
        host=host,
        namespace=env.get("KUBENOVA_NAMESPACE", DEFAULT_NAMESPACE),
        libvirt_uri=env.get("LIBVIRT_URI", "qemu:///system"),
        domains=DomainSettings(
            domain_type=env.get("KUBENOVA_DOMAIN_TYPE", "kvm"),
            state_dir=env.get("KUBENOVA_STATE_DIR", DomainSettings.state_dir),
            image_dir=env.get("KUBENOVA_IMAGE_DIR", DomainSettings.image_dir),
            console_dir=env.get("KUBENOVA_CONSOLE_DIR", DomainSettings.console_dir),
        ),
        manage_storage=storage == "files",
        labels=parse_labels(env.get("KUBENOVA_HOST_LABELS", "")),
        disk_bytes=Quantity(disk).to_int() if disk else None,
        heartbeat_seconds=number("KUBENOVA_HEARTBEAT_SECONDS", 10.0),
        lease_seconds=int(number("KUBENOVA_LEASE_SECONDS", 40)),
        report_seconds=number("KUBENOVA_REPORT_SECONDS", 30.0),
        resync_seconds=number("KUBENOVA_RESYNC_SECONDS", 60.0),
        orphan_grace_seconds=number("KUBENOVA_ORPHAN_GRACE_SECONDS", 300.0),
        workers=int(number("KUBENOVA_WORKERS", 4)),
        metrics_port=int(number("KUBENOVA_METRICS_PORT", 0)),
        migration_uri=env.get("KUBENOVA_MIGRATION_URI", ""),
        migration_address=env.get("KUBENOVA_MIGRATION_ADDRESS", ""),
        image_cache_bytes=cache_bytes,
        **_console(env, int(number("KUBENOVA_CONSOLE_PORT", 0))),
    )


def _console(env: Mapping[str, str], port: int) -> dict[str, Any]:
    """The console endpoint's settings; a port without its certificates is refused."""
    if not port:
        return {}
    files = {k: env.get(k, "") for k in (
        "KUBENOVA_CONSOLE_CERT", "KUBENOVA_CONSOLE_KEY", "KUBENOVA_CONSOLE_CLIENT_CA"
    )}  # fmt: skip
    missing = [k for k, v in files.items() if not v]
    if missing:
        raise ConfigError(
            f"KUBENOVA_CONSOLE_PORT is set but {', '.join(missing)} is not: the console "
            "endpoint serves only mutual TLS (docs/console.md)"
        )
    bind = env.get("KUBENOVA_CONSOLE_BIND", "0.0.0.0")
    names = tuple(n.strip() for n in env.get("KUBENOVA_CONSOLE_CLIENT_NAMES", "").split(","))
    return {
        "console_port": port,
        "console_bind": bind,
        "console_address": env.get("KUBENOVA_CONSOLE_ADDRESS") or f"{bind}:{port}",
        "console_cert": files["KUBENOVA_CONSOLE_CERT"],
        "console_key": files["KUBENOVA_CONSOLE_KEY"],
        "console_client_ca": files["KUBENOVA_CONSOLE_CLIENT_CA"],
        "console_client_names": tuple(n for n in names if n) or ("kubenova-console",),
    }

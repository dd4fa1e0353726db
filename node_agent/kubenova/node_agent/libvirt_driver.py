"""The `Hypervisor` on libvirt — the only module that imports libvirt, and the only place
its untyped objects (`Any`) appear. Does I/O.

Every blocking call runs in a worker thread, timed into `metrics.LIBVIRT_CALL_SECONDS`.
libvirt's events run in libvirt's own event loop, in a thread of its own, registered before the
first connection opens (`open()` does it once per process); each callback is handed to the
asyncio loop that opened the connection. libvirt calls its event hooks from whichever thread
makes an API call, and ours run in worker threads: `libvirtaio` would then touch asyncio from
those threads, which asyncio does not allow, and it binds events to the first loop the process
ran. A connection that dies (libvirtd restarted) is reopened on the next call and
`on_reconnect` is told, so the agent resyncs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from kubenova.node_agent import domain_xml, hostfacts, metrics
from kubenova.node_agent.hypervisor import (
    Domain,
    DomainEventHandler,
    DomainState,
    HostFacts,
    HypervisorError,
    JobProgress,
    StopCause,
    Usage,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
}
_CAUSES = {
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: StopCause.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: StopCause.DESTROYED,
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: StopCause.CRASHED,
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: StopCause.FAILED,
}
_event_impl_lock = threading.Lock()
_event_impl_registered = False


def register_event_loop() -> None:
    """Start libvirt's own event loop in a daemon thread (once per process, before any open)."""
    global _event_impl_registered
    with _event_impl_lock:
        if not _event_impl_registered:
            libvirt.registerErrorHandler(_quiet, None)  # errors arrive as exceptions
            libvirt.virEventRegisterDefaultImpl()
            threading.Thread(target=_run_events, name="libvirt-events", daemon=True).start()
            _event_impl_registered = True


def _run_events() -> None:
    while True:
        if libvirt.virEventRunDefaultImpl() < 0:
            log.error("libvirt's event loop failed; running it again in 1 s")
            time.sleep(1.0)


def _quiet(_ctx: Any, _err: Any) -> None:
    """libvirt prints every error to stderr unless a handler takes them."""


def _is_missing(e: Exception) -> bool:
    return isinstance(e, libvirt.libvirtError) and e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN


def _is_not_running(e: Exception) -> bool:
    return (
        isinstance(e, libvirt.libvirtError)
        and e.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID
    )


def _is_unsupported(e: Exception) -> bool:
    return isinstance(e, libvirt.libvirtError) and e.get_error_code() in (
        libvirt.VIR_ERR_NO_SUPPORT,
        libvirt.VIR_ERR_INVALID_ARG,
        libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    )


class LibvirtHypervisor:
    """A `Hypervisor` on one libvirt connection URI."""

    def __init__(
        self, uri: str, host: str = "", on_reconnect: Callable[[], None] | None = None
    ) -> None:
        self.uri = uri
        self._host = host
        self._conn: Any = None
        self._on_event: DomainEventHandler | None = None
        self._on_reconnect = on_reconnect
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop that opened the connection: libvirt's callbacks are handed to it."""
        self._cpu_sample: tuple[int, int] | None = None
        self._lost = False

    # -- connection ---------------------------------------------------------------------

    async def open(self, on_event: DomainEventHandler) -> None:
        register_event_loop()
        self._loop = asyncio.get_running_loop()
        self._on_event = on_event
        await self._connection()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                await asyncio.to_thread(conn.close)

    async def _connection(self) -> Any:
        async with self._lock:
            conn = self._conn
            if conn is not None and _alive(conn):  # local state, no round trip
                return conn
            reopened = conn is not None or self._lost
            self._conn = None
            try:
                conn = await self._timed("open", libvirt.open, self.uri)
            except libvirt.libvirtError as e:
                raise HypervisorError(f"cannot connect to libvirt at {self.uri}: {e}") from None
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None
            )
            with contextlib.suppress(libvirt.libvirtError):
                conn.registerCloseCallback(self._closed, None)
            self._conn = conn
            self._lost = False
            if reopened:
                log.warning("reconnected to libvirt", extra={"uri": self.uri})
                if self._on_reconnect is not None:
                    self._on_reconnect()
            return conn

    def _soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Run `fn(*args)` on the asyncio loop (we are in libvirt's event thread)."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed under us
                self._loop.call_soon_threadsafe(fn, *args)

    def _lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        if self._on_event is not None:
            self._soon(self._on_event, dom.name())

    def _closed(self, _conn: Any, reason: int, _opaque: Any) -> None:
        self._soon(self._lost_connection, reason)

    def _lost_connection(self, reason: int) -> None:
        log.warning("libvirt connection closed", extra={"uri": self.uri, "reason": reason})
        self._conn = None
        self._lost = True
        if self._on_reconnect is not None:
            self._on_reconnect()  # the resync reopens the connection (retrying until it can)

    async def _timed(self, call: str, fn: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        try:
            return await asyncio.to_thread(fn, *args)
        finally:
            metrics.LIBVIRT_CALL_SECONDS.labels(self._host, call).observe(
                time.perf_counter() - started
            )

    async def _on_domain(self, call: str, name: str, fn: Callable[[Any], T]) -> T:
        conn = await self._connection()

        def run() -> T:
            return fn(conn.lookupByName(name))

        try:
            return await self._timed(call, run)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"libvirt {call} of domain {name} on {self.uri}: {e}") from e

    # -- domains --------------------------------------------------------------------------

    async def domains(self) -> list[Domain]:
        conn = await self._connection()
        return await self._timed("list", _list_domains, conn)

    async def domain(self, name: str) -> Domain | None:
        conn = await self._connection()

        def run() -> Domain | None:
            try:
                return _observe(conn.lookupByName(name))
            except libvirt.libvirtError as e:
                if _is_missing(e):
                    return None
                raise

        try:
            return await self._timed("lookup", run)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"libvirt lookup of domain {name} on {self.uri}: {e}") from e

    async def define(self, xml: str) -> None:
        conn = await self._connection()
        try:
            await self._timed("define", conn.defineXML, xml)
        except libvirt.libvirtError as e:
            raise HypervisorError(f"libvirt define on {self.uri}: {e}") from e

    async def start(self, name: str) -> None:
        await self._on_domain("start", name, _start)

    async def shutdown(self, name: str) -> None:
        await self._on_domain("shutdown", name, _shutdown)

    async def destroy(self, name: str) -> None:
        await self._on_domain("destroy", name, _destroy)

    async def undefine(self, name: str) -> None:
        await self._on_domain("undefine", name, _undefine)

    async def reboot(self, name: str) -> None:
        await self._on_domain("reboot", name, lambda d: d.reboot(0))

    async def set_restart_token(self, name: str, token: str) -> None:
        element = domain_xml.restart_element(token)

        def run(d: Any) -> None:
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
            if d.isActive():
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            d.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                element,
                domain_xml.RESTART_PREFIX,
                domain_xml.RESTART_NS,
                flags,
            )

        await self._on_domain("set-metadata", name, run)

    async def addresses(self, name: str) -> list[str]:
        def run(d: Any) -> list[str]:
            if not d.isActive():
                return []
            try:
                found = d.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE)
            except libvirt.libvirtError as e:
                if _is_unsupported(e) or _is_not_running(e):
                    return []
                raise
            return [
                a["addr"]
                for iface in found.values()
                for a in (iface.get("addrs") or [])
                if a.get("addr")
            ]

        return await self._on_domain("addresses", name, run)

    # -- the host -------------------------------------------------------------------------

    async def host_facts(self) -> HostFacts:
        conn = await self._connection()
        return await self._timed("host-facts", _host_facts, conn, self.uri)

    async def cpu_percent(self) -> float | None:
        """Host CPU use since the previous call, from the node's CPU counters; None on the
        first call and when the driver keeps no counters (the test driver's stand still)."""
        conn = await self._connection()
        try:
            stats = await self._timed("cpu-stats", conn.getCPUStats, -1, 0)
        except libvirt.libvirtError as e:
            if _is_unsupported(e):
                return None
            raise HypervisorError(f"libvirt node CPU stats on {self.uri}: {e}") from e
        busy = sum(int(stats.get(k, 0)) for k in ("user", "kernel", "iowait"))
        total = busy + int(stats.get("idle", 0))
        previous, self._cpu_sample = self._cpu_sample, (busy, total)
        if previous is None or total <= previous[1]:
            return None
        return 100.0 * (busy - previous[0]) / (total - previous[1])

    async def usage(self) -> Usage:
        conn = await self._connection()
        return await self._timed("usage", _usage, conn)

    # -- live migration (`Migrator`) ------------------------------------------------------

    async def migrate(self, name: str, dest_uri: str, address: str) -> None:
        """Peer to peer: this host's libvirtd connects to the target's and runs the whole
        transfer; the guest is defined there (PERSIST_DEST) and undefined here once it runs
        there (UNDEFINE_SOURCE), so it is never defined, let alone running, in two places."""
        params = {libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{address}"} if address else {}
        flags = (
            libvirt.VIR_MIGRATE_LIVE
            | libvirt.VIR_MIGRATE_PEER2PEER
            | libvirt.VIR_MIGRATE_PERSIST_DEST
            | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        )
        await self._on_domain("migrate", name, lambda d: d.migrateToURI3(dest_uri, params, flags))

    async def job(self, name: str) -> JobProgress | None:
        def run(d: Any) -> JobProgress | None:
            stats = d.jobStats(0)
            if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
                return None
            return JobProgress(
                data_total=stats.get("data_total", stats.get("memory_total")),
                data_processed=stats.get("data_processed", stats.get("memory_processed")),
                data_remaining=stats.get("data_remaining", stats.get("memory_remaining")),
                elapsed_ms=stats.get("time_elapsed"),
            )

        try:
            return await self._on_domain("job-stats", name, run)
        except HypervisorError as e:
            cause = e.__cause__
            if isinstance(cause, Exception) and (_is_missing(cause) or _is_not_running(cause)):
                return None  # gone (migrated) or stopped meanwhile: no job
            raise

    async def abort_job(self, name: str) -> None:
        def run(d: Any) -> None:
            try:
                d.abortJob()
            except libvirt.libvirtError as e:
                if not _is_not_running(e):  # no job any more: nothing to stop
                    raise

        await self._on_domain("abort-job", name, run)


def _alive(conn: Any) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _observe(dom: Any) -> Domain:
    state, reason = dom.state(0)
    xml = dom.XMLDesc(0)
    owner, token = domain_xml.read_owner(xml)
    mapped = _STATES.get(state, DomainState.OTHER)
    cause = StopCause.NONE
    if mapped == DomainState.SHUTOFF:
        cause = _CAUSES.get(reason, StopCause.OTHER)
    return Domain(
        name=dom.name(),
        uuid=dom.UUIDString(),
        state=mapped,
        cause=cause,
        owner=owner,
        restart_token=token,
        serial_log=domain_xml.read_serial_log(xml),
    )


def _list_domains(conn: Any) -> list[Domain]:
    found = []
    for dom in conn.listAllDomains(0):
        try:
            found.append(_observe(dom))
        except libvirt.libvirtError as e:
            if not _is_missing(e):  # undefined while we looked
                raise
    return found


def _start(d: Any) -> None:
    if d.isActive():
        return
    try:
        d.create()
    except libvirt.libvirtError:
        if not d.isActive():  # started by someone else meanwhile is as good
            raise


def _shutdown(d: Any) -> None:
    try:
        d.shutdown()
    except libvirt.libvirtError as e:
        if d.isActive():
            raise
        log.debug("shutdown of an inactive domain: %s", e)


def _destroy(d: Any) -> None:
    try:
        d.destroy()
    except libvirt.libvirtError:
        if d.isActive():
            raise


def _undefine(d: Any) -> None:
    flags = (
        libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    )
    try:
        d.undefineFlags(flags)
    except libvirt.libvirtError as e:
        if not _is_missing(e):
            raise


def _host_facts(conn: Any, uri: str) -> HostFacts:
    _model, memory_mib, cpus, *_ = conn.getInfo()
    cells = hostfacts.numa_cells(conn.getCapabilities())
    devices = []
    try:
        for dev in conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV):
            pci = hostfacts.pci_device(dev.XMLDesc(0))
            if pci is not None:
                devices.append(pci)
    except libvirt.libvirtError as e:
        if not _is_unsupported(e):
            raise
    version = conn.getLibVersion()
    return HostFacts(
        cpus=int(cpus),
        memory_bytes=int(memory_mib) * 1024 * 1024,
        numa_cells=cells,
        pci_devices=tuple(sorted(devices, key=lambda d: d.address)),
        hypervisor=f"{uri} (libvirt {_version(version)})",
    )


def _version(v: int) -> str:
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"


def _usage(conn: Any) -> Usage:
    running = vcpus = memory = 0
    by_state: dict[DomainState, int] = {}
    for dom in conn.listAllDomains(0):
        try:
            state, max_kib, _mem, n_vcpus, _cpu_time = dom.info()
        except libvirt.libvirtError as e:
            if _is_missing(e):
                continue
            raise
        mapped = _STATES.get(state, DomainState.OTHER)
        by_state[mapped] = by_state.get(mapped, 0) + 1
        if mapped in (DomainState.RUNNING, DomainState.PAUSED, DomainState.SHUTTING_DOWN):
            running += 1
            vcpus += int(n_vcpus)
            memory += int(max_kib) * 1024
    return Usage(running=running, vcpus=vcpus, memory_bytes=memory, by_state=by_state)

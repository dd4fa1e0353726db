"""One agent for one host: wires the hypervisor, the VM informer, the work queue, the
reconciler, heartbeats, the Host report and orphan clean-up together. Does I/O.

Tasks: the informer (list + watch of the VMs bound to this host, a `kube.watch.Reflector`),
`workers` reconcile workers, the heartbeat (Lease), the Host report and a periodic resync.
libvirt's lifecycle events enqueue the VM whose domain changed, so a guest that crashed or
powered itself off is noticed within a second, not at the next resync.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import kubernetes

from kubenova.api import constants
from kubenova.api.vm import VMPhase
from kubenova.kube import client, leases
from kubenova.kube.events import EventRecorder
from kubenova.node_agent import VERSION, decide, hostfacts, images, metrics, migrations, storage
from kubenova.node_agent.config import AgentConfig
from kubenova.node_agent.console import ConsoleEndpoint, ConsoleTLS
from kubenova.node_agent.hypervisor import (
    DomainState,
    HostFacts,
    Hypervisor,
    HypervisorError,
    Load,
    Owner,
)
from kubenova.node_agent.imagecache import ImageCache
from kubenova.node_agent.kubeapi import KubeAPI, VMInformer
from kubenova.node_agent.libvirt_driver import LibvirtHypervisor
from kubenova.node_agent.queueing import WorkQueue
from kubenova.node_agent.reconcile import Reconciler

log = logging.getLogger(__name__)

ORPHAN_SCAN = "~orphans"
"""A queue key that is no VM (a '~' is in no namespace): scan for orphan domains."""


def key_of_domain(name: str) -> str | None:
    """The VM key of a domain named by `domain_xml.domain_name`."""
    namespace, sep, vm = name.partition("_")
    return f"{namespace}/{vm}" if sep and namespace and vm else None


class Agent:
    def __init__(
        self,
        cfg: AgentConfig,
        api: kubernetes.client.ApiClient,
        hv: Hypervisor | None = None,
    ) -> None:
        self.cfg = cfg
        self.kube = KubeAPI(api, cfg.host, cfg.namespace)
        self.hv: Hypervisor = hv or LibvirtHypervisor(
            cfg.libvirt_uri, cfg.host, on_reconnect=self.resync
        )
        self.queue = WorkQueue()
        self.informer = VMInformer(self.kube, self.queue.add)
        # The VMs' phase changes as Kubernetes events, next to the operator's.
        self.events = EventRecorder(api, "kubenova-agent", cfg.host)
        self.reconciler = Reconciler(cfg, self.hv, self.kube, self.events)
        # VMImages are fetched only where the agent makes files (not on simulated hosts).
        self.images: images.Images | None = None
        if cfg.manage_storage:
            metrics.init_image_cache(cfg.host)
            cache = ImageCache(
                cfg.domains.image_dir, cfg.host, cfg.image_cache_bytes, needed=self._boot_names
            )
            self.images = images.Images(cache, self.kube, self.events, cfg.host)
            cache.on_change = self._report_soon
        self.reconciler.images = self.images
        self.reconciler.heartbeat_fresh = self._heartbeat_fresh
        self._host_labels: dict[str, str] | None = None
        self._reports: set[asyncio.Task[None]] = set()
        self.migrations = migrations.Migrations(cfg, self.hv, self.kube, self.informer.get)
        self.lease = leases.LeaseClient(api, cfg.namespace, cfg.lease_name)
        self._orphans: dict[str, dt.datetime] = {}
        self._failures: dict[str, int] = {}
        self._facts: HostFacts | None = None
        self._last_heartbeat: float | None = None
        self.console: ConsoleEndpoint | None = None
        if cfg.console_port:
            tls = ConsoleTLS(
                cfg.console_cert, cfg.console_key, cfg.console_client_ca, cfg.console_client_names
            )
            self.console = ConsoleEndpoint(cfg.host, cfg.domains, tls, self.informer.get)
        metrics.HEARTBEAT_AGE.labels(cfg.host).set_function(self._heartbeat_age)

    def _heartbeat_fresh(self) -> bool:
        return self._heartbeat_age() < self.cfg.lease_seconds  # NaN (never renewed): False

    def _heartbeat_age(self) -> float:
        if self._last_heartbeat is None:
            return float("nan")
        return time.monotonic() - self._last_heartbeat

    def _boot_names(self) -> set[str]:
        return images.names_in_use(self.informer.cache.values())

    def _report_soon(self) -> None:
        """What the image cache holds changed: the Host says so now, not a period later (the
        operator lists the hosts of each VMImage from it)."""

        async def report() -> None:
            try:
                await self.report()
            except Exception as e:
                log.warning("Host report failed: %s", e)

        task = asyncio.get_running_loop().create_task(report())
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    def resync(self) -> None:
        """Look at every VM and domain again (after a libvirt reconnect, and periodically)."""
        for key in list(self.informer.cache):
            self.queue.add(key)
        self.queue.add(ORPHAN_SCAN)

    def _on_domain_event(self, domain: str) -> None:
        key = key_of_domain(domain)
        if key is not None and key in self.informer.cache:
            self.queue.add(key)
        else:
            self.queue.add(ORPHAN_SCAN)

    async def run(self) -> None:
        """Run until cancelled."""
        await self._until_done("connecting to libvirt", lambda: self.hv.open(self._on_domain_event))
        labels = {**self.cfg.labels, constants.LABEL_HOSTNAME: self.cfg.host}
        await self._until_done("registering the Host", lambda: self.kube.ensure_host(labels))
        if self.images is not None:
            await asyncio.to_thread(self.images.cache.load)
        if self.cfg.manage_storage:  # qemu makes each VM's serial socket in it
            Path(self.cfg.domains.console_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.console is not None:
            await self.console.start(self.cfg.console_bind, self.cfg.console_port)
        log.info(
            "agent started",
            extra={"host": self.cfg.host, "uri": self.hv.uri, "selector": self.kube.selector},
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.informer.run())
                tg.create_task(self.events.run())
                tg.create_task(self._every(self.cfg.heartbeat_seconds, self.heartbeat))
                tg.create_task(self._every(self.cfg.report_seconds, self.report))
                tg.create_task(self._resync_loop())
                if self.images is not None:
                    tg.create_task(self._every(self.cfg.resync_seconds, self.precache))
                for _ in range(max(1, self.cfg.workers)):
                    tg.create_task(self._worker())
        finally:
            await self.informer.close()
            await self.migrations.stop()
            if self.console is not None:
                await self.console.stop()
            await self.hv.close()

    async def _until_done(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        """A start-up step waits for libvirt and the API server (as the kubelet waits for the
        API server) instead of ending the process after a few retries: an agent started while
        the API server restarts would otherwise exit, and in a DaemonSet wait out a growing
        crash-loop back-off. Errors that are not transient (a refused permission) still end
        it."""
        delay = 1.0
        while True:
            try:
                await step()
                return
            except Exception as e:
                if not (client.transient(e) or isinstance(e, HypervisorError)):
                    raise
                log.warning("%s failed, trying again in %.0f s: %s", what, delay, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _every(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await job()
            except Exception as e:
                log.warning("%s failed: %s", getattr(job, "__name__", job), e)
            await asyncio.sleep(seconds)

    async def _resync_loop(self) -> None:
        await self.informer.synced.wait()
        self.queue.add(ORPHAN_SCAN)
        while True:
            await asyncio.sleep(self.cfg.resync_seconds)
            self.resync()

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self._handle(key)
                self._failures.pop(key, None)
                metrics.RECONCILES.labels(self.cfg.host, "ok").inc()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if client.is_conflict(e):
                    self.queue.add_after(key, 0.2)
                    metrics.RECONCILES.labels(self.cfg.host, "conflict").inc()
                else:
                    n = self._failures.get(key, 0) + 1
                    self._failures[key] = n
                    delay = min(0.5 * 2**n, 60.0)
                    log.warning("retrying %s in %.1fs after: %s", key, delay, e)
                    self.queue.add_after(key, delay)
                    metrics.RECONCILES.labels(self.cfg.host, "error").inc()
            finally:
                self.queue.done(key)

    async def _handle(self, key: str) -> None:
        if key == ORPHAN_SCAN:
            await self.scan_orphans()
            return
        raw = self.informer.get(key)
        if raw is None:
            self.queue.add(ORPHAN_SCAN)  # its domain, if any, is now an orphan
            return
        if migrations.wanted(raw, self.cfg.host):
            self.migrations.ensure(key)  # the reconciler leaves Migrating VMs alone
        outcome = await self.reconciler.reconcile(raw)
        if outcome.requeue_after is not None:
            self.queue.add_after(key, outcome.requeue_after)

    async def scan_orphans(self) -> None:
        if not self.informer.synced.is_set():
            return  # before the first list every domain would look orphaned
        bound = {
            str(o["metadata"].get("uid")) for o in self.informer.cache.values() if o["metadata"]
        }
        now = dt.datetime.now(dt.UTC)
        domains = await self.hv.domains()
        elsewhere, migrating = await self._whereabouts(d.owner for d in domains if d.owner)
        scan = decide.scan_orphans(
            domains,
            bound,
            self._orphans,
            now,
            self.cfg.orphan_grace_seconds,
            elsewhere=elsewhere - bound,
            migrating=migrating - bound,
        )
        self._orphans = scan.first_seen
        metrics.ORPHANS.labels(self.cfg.host).set(len(scan.first_seen))
        for name in scan.new:
            log.warning("orphan domain %s: no VM bound to this host owns it", name)
            await self.kube.host_event(
                "OrphanDomain",
                f"libvirt domain {name} on {self.cfg.host} belongs to no VM bound here; it is "
                f"removed after {self.cfg.orphan_grace_seconds:.0f}s",
            )
        for name in scan.remove:
            await self.hv.destroy(name)
            await self.hv.undefine(name)
            if self.cfg.manage_storage:
                folder = f"{self.cfg.domains.state_dir}/{name}"
                await storage.remove(folder, self.cfg.domains.state_dir)
            self._orphans.pop(name, None)
            metrics.ORPHANS_REMOVED.labels(self.cfg.host).inc()
            log.warning("orphan domain %s removed", name)
            await self.kube.host_event("OrphanDomainRemoved", f"removed orphan domain {name}")
        if self._orphans:
            self.queue.add_after(ORPHAN_SCAN, self.cfg.orphan_grace_seconds)

    async def _whereabouts(self, owners: Iterable[Owner]) -> tuple[frozenset[str], frozenset[str]]:
        """For domains whose VM is not bound here: uids of VMs bound to another host (or to
        none), and of VMs being migrated, read from the API."""
        elsewhere: set[str] = set()
        migrating: set[str] = set()
        for owner in owners:
            if owner.key in self.informer.cache:
                continue
            raw = await self.kube.get_vm(owner.namespace, owner.name)
            meta = (raw or {}).get("metadata") or {}
            status = (raw or {}).get("status") or {}
            if meta.get("uid") != owner.uid:
                continue  # gone, or an other VM of that name: an orphan after the grace
            if status.get("phase") == VMPhase.MIGRATING.value:
                migrating.add(owner.uid)
            elif status.get("host") != self.cfg.host:
                elsewhere.add(owner.uid)
        return frozenset(elsewhere), frozenset(migrating)

    async def precache(self) -> None:
        """Fetch ahead of time the VMImages this host's pools pre-cache (once the Host's
        labels are known from a report)."""
        if self.images is not None and self._host_labels is not None:
            await self.images.precache(self._host_labels)

    async def heartbeat(self) -> None:
        record = await self.lease.try_hold(self.cfg.host, self.cfg.lease_seconds)
        if record is None:
            log.warning("heartbeat Lease %s is held by another agent", self.cfg.lease_name)
            return
        was_fresh = self._heartbeat_fresh()
        self._last_heartbeat = time.monotonic()
        if not was_fresh and self.informer.synced.is_set():
            self.resync()  # VMs left Unknown while the Lease had run out are reported back

    async def report(self) -> None:
        if self._facts is None:
            self._facts = await self.hv.host_facts()
        facts = self._facts
        usage = await self.hv.usage()
        measured = await self.hv.cpu_percent()
        cpu = measured if measured is not None else 100.0 * usage.vcpus / max(1, facts.cpus)
        memory = 100.0 * usage.memory_bytes / max(1, facts.memory_bytes)
        disk = self.cfg.disk_bytes or _disk_size(self.cfg.domains.state_dir)
        status = hostfacts.host_status(
            facts,
            Load(cpu_percent=cpu, memory_percent=memory),
            domains=sum(usage.by_state.values()),
            disk_bytes=disk,
            agent_version=VERSION,
            now=dt.datetime.now(dt.UTC),
        ).to_dict()
        for operator_field in ("phase", "conditions"):
            status.pop(operator_field, None)
        status["migration"] = {
            "uri": self.cfg.migration_uri,
            "address": self.cfg.migration_address,
        }
        status["images"] = self.images.cache.held() if self.images is not None else []
        status["console"] = {"address": self.cfg.console_address}
        host = await self.kube.patch_host_status(status)
        annotations = (host.get("metadata") or {}).get("annotations") or {}
        self._host_labels = (host.get("metadata") or {}).get("labels") or {}
        if constants.ANNOTATION_FENCED in annotations:
            # Running and reporting: whatever fenced this host is over; a confirmation is
            # for one failure, not the next.
            await self.kube.clear_host_annotation(constants.ANNOTATION_FENCED)
            log.info("host %s is back: its fencing confirmation is removed", self.cfg.host)
        for state in DomainState:
            metrics.DOMAINS.labels(self.cfg.host, str(state)).set(usage.by_state.get(state, 0))


def _disk_size(path: str) -> int:
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).total

"""The source agent's part of a live migration: for each VM the operator marked Migrating away
from this host, drive libvirt's peer-to-peer migration to the target host's libvirt, report
progress and the outcome on the VMMigration's status (`transfer`, `progressPercent`), and stop
the job when the operator asks (cancel, timeout). Does I/O.

One task per VM, outside the reconcile workers (a transfer takes seconds to minutes). Each
round re-reads the VM from the informer and the domain from libvirt and asks
`transfer.next_step()`, so a restarted agent carries on from what libvirt says."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from kubenova.api import constants
from kubenova.api.migration import TransferState
from kubenova.api.vm import VMPhase
from kubenova.node_agent import domain_xml, transfer
from kubenova.node_agent.config import AgentConfig
from kubenova.node_agent.hypervisor import Hypervisor, Migrator
from kubenova.node_agent.kubeapi import KubeAPI, RawObject

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5


def wanted(raw: RawObject, host: str) -> bool:
    """A VM this host's agent must move: Migrating, still bound here, with a migration."""
    meta = raw.get("metadata") or {}
    status = raw.get("status") or {}
    return (
        status.get("phase") == VMPhase.MIGRATING.value
        and status.get("host") == host
        and meta.get("deletionTimestamp") is None
        and bool((meta.get("annotations") or {}).get(constants.ANNOTATION_MIGRATION))
    )


class Migrations:
    def __init__(
        self,
        cfg: AgentConfig,
        hv: Hypervisor,
        kube: KubeAPI,
        lookup: Callable[[str], RawObject | None],
    ) -> None:
        self.cfg = cfg
        self.hv = hv
        self.kube = kube
        self.lookup = lookup
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._finished: dict[str, str] = {}
        """VM key → the migration whose outcome was reported: not to be started again while
        the operator has not yet acted on it."""

    def ensure(self, key: str) -> None:
        """Start (once) the task that moves VM `key`."""
        raw = self.lookup(key) or {}
        current = ((raw.get("metadata") or {}).get("annotations") or {}).get(
            constants.ANNOTATION_MIGRATION
        )
        if current is not None and self._finished.get(key) == current:
            return
        task = self._tasks.get(key)
        if task is None or task.done():
            self._tasks[key] = asyncio.create_task(self._run(key), name=f"migrate {key}")

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _run(self, key: str) -> None:
        try:
            await self._drive(key)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("migration of VM %s failed in the agent", key)

    async def _drive(self, key: str) -> None:
        while True:
            raw = self.lookup(key)
            if raw is None or not wanted(raw, self.cfg.host):
                return  # the operator finished or gave up on it
            meta = raw["metadata"]
            ann: dict[str, str] = meta.get("annotations") or {}
            namespace, vm_name = meta["namespace"], meta["name"]
            migration = ann[constants.ANNOTATION_MIGRATION]
            name = domain_xml.domain_name(namespace, vm_name)
            domain = await self.hv.domain(name)
            if not isinstance(self.hv, Migrator):
                await self._report(
                    key, namespace, migration, TransferState.FAILED, f"{self.hv.uri} cannot migrate"
                )
                return
            job = await self.hv.job(name) if domain is not None else None
            step = transfer.next_step(domain, job, ann.get(constants.ANNOTATION_MIGRATION_ABORT))
            match step.next:
                case transfer.Next.COMPLETED:
                    await self._report(
                        key, namespace, migration, TransferState.COMPLETED, step.message
                    )
                    return
                case transfer.Next.FAILED:
                    await self._report(
                        key, namespace, migration, TransferState.FAILED, step.message
                    )
                    return
                case transfer.Next.ABORT:
                    log.info("VM %s: aborting the migration: %s", key, step.message)
                    await self.hv.abort_job(name)
                    await asyncio.sleep(POLL_SECONDS)
                case transfer.Next.WATCH:
                    if job is not None:
                        await self._progress(namespace, migration, transfer.percent(job))
                    await asyncio.sleep(POLL_SECONDS)
                case transfer.Next.MIGRATE:
                    target = ann.get(constants.ANNOTATION_MIGRATION_TARGET, "?")
                    uri = ann.get(constants.ANNOTATION_MIGRATION_URI, "")
                    address = ann.get(constants.ANNOTATION_MIGRATION_ADDRESS, "")
                    await self._transfer(key, name, namespace, migration, target, uri, address)
                    return

    async def _transfer(
        self,
        key: str,
        name: str,
        namespace: str,
        migration: str,
        target: str,
        uri: str,
        address: str,
    ) -> None:
        hv = self.hv
        if not isinstance(hv, Migrator):
            return
        if not uri:
            await self._report(
                key,
                namespace,
                migration,
                TransferState.FAILED,
                f"host {target} reports no status.migration.uri; set KUBENOVA_MIGRATION_URI "
                "on its agent",
            )
            return
        # Defence in depth behind the admission policies: send the VM only where the target
        # host itself says it takes migrations.
        problem = transfer.target_problem(
            target, uri, address, await self.kube.migration_offer(target)
        )
        if problem is not None:
            log.warning("VM %s: %s", key, problem, extra={"vm": key})
            await self._report(key, namespace, migration, TransferState.FAILED, problem)
            return
        log.info("VM %s: migrating to %s (%s)", key, target, uri, extra={"vm": key})
        await self._report(key, namespace, migration, TransferState.RUNNING, f"copying to {target}")
        started = time.monotonic()
        job = asyncio.create_task(hv.migrate(name, uri, address))
        aborted = False
        last = -1
        while not job.done():
            await asyncio.wait({job}, timeout=POLL_SECONDS)
            if job.done():
                break
            raw = self.lookup(key) or {}
            why = ((raw.get("metadata") or {}).get("annotations") or {}).get(
                constants.ANNOTATION_MIGRATION_ABORT
            )
            if why and not aborted:
                log.info("VM %s: aborting the migration: %s", key, why)
                with contextlib.suppress(Exception):
                    await hv.abort_job(name)
                aborted = True
            with contextlib.suppress(Exception):
                progress = await hv.job(name)
                if progress is not None and transfer.percent(progress) != last:
                    last = transfer.percent(progress)
                    await self._progress(namespace, migration, last, progress.data_total,
                                         progress.data_processed)  # fmt: skip
        elapsed_ms = int((time.monotonic() - started) * 1000)
        error = job.exception()
        if error is None:
            log.info("VM %s: migrated to %s in %d ms", key, target, elapsed_ms)
            await self._report(
                key, namespace, migration, TransferState.COMPLETED,
                f"running on {target} after {elapsed_ms} ms", elapsed_ms=elapsed_ms,
            )  # fmt: skip
        else:
            log.warning("VM %s: migration to %s failed: %s", key, target, error)
            await self._report(
                key, namespace, migration, TransferState.FAILED, str(error)[:1000],
                elapsed_ms=elapsed_ms,
            )  # fmt: skip

    async def _progress(
        self,
        namespace: str,
        migration: str,
        percent: int,
        total: int | None = None,
        processed: int | None = None,
    ) -> None:
        body: dict[str, Any] = {"progressPercent": percent}
        if total is not None:
            body["transfer"] = {"dataTotalBytes": total, "dataProcessedBytes": processed}
        try:
            await self.kube.patch_migration_status(namespace, migration, body)
        except Exception as e:  # progress is best effort; the outcome is retried
            log.debug("progress of %s not written: %s", migration, e)

    async def _report(
        self,
        key: str,
        namespace: str,
        migration: str,
        state: TransferState,
        message: str,
        elapsed_ms: int | None = None,
    ) -> None:
        body: dict[str, Any] = {"transfer": {"state": state.value, "message": message}}
        if elapsed_ms is not None:
            body["transfer"]["elapsedMs"] = elapsed_ms
        if state is TransferState.COMPLETED:
            body["progressPercent"] = 100
        delay = 0.2
        for _ in range(8):
            try:
                await self.kube.patch_migration_status(namespace, migration, body)
                if state is not TransferState.RUNNING:
                    self._finished[key] = migration
                return
            except Exception as e:
                log.warning("reporting migration %s as %s failed: %s", migration, state, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

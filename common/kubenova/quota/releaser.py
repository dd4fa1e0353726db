"""A small release loop: watches VirtualMachines and releases the quota charge of each one
being deleted once only the quota finalizer is left. Does I/O.

`python -m kubenova.quota.releaser` runs it beside each webhook replica (and alone, for tests
and for clusters without the operator); the operator calls `ledger.release_charge()` from its
own VM handlers as well. Running both is safe (a release is claimed by a compare-and-swap).
The watch is a `kubenova.kube.watch.Reflector`, as every other list-and-watch of kubenova's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from typing import Any

from kubenova.api import constants
from kubenova.api.meta import InvalidObjectError
from kubenova.api.vm import VirtualMachine
from kubenova.kube import aio, client, logs
from kubenova.kube.watch import Reflector
from kubenova.quota import ledger, store

log = logging.getLogger(__name__)

RESYNC_SECONDS = 30.0
"""How often the VMs still waiting for a release are tried again (a release that failed)."""


def needs_release(raw: dict[str, Any]) -> bool:
    meta = raw.get("metadata", {})
    finalizers = meta.get("finalizers") or []
    return bool(meta.get("deletionTimestamp")) and finalizers == [constants.QUOTA_FINALIZER]


class ReleaseLoop:
    def __init__(self, session: aio.Session, workers: int = 4) -> None:
        self.session = session
        self.ledger = ledger.QuotaLedger(store.ApiStore(session))
        self.workers = workers
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.waiting: dict[str, dict[str, Any]] = {}
        """The VMs seen needing a release and not seen released since, by namespace/name."""
        path = f"/apis/{constants.GROUP}/{constants.VERSION}/{VirtualMachine.crd.plural}"
        self.watch = Reflector(session, path, self.on_event, name="virtualmachines")

    def on_event(self, kind: str, raw: dict[str, Any]) -> None:
        meta = raw.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        if kind != "DELETED" and needs_release(raw):
            self.waiting[key] = raw
            self.queue.put_nowait(raw)
        else:
            self.waiting.pop(key, None)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            for raw in list(self.waiting.values()):
                self.queue.put_nowait(raw)

    async def _worker(self) -> None:
        while True:
            raw = await self.queue.get()
            try:
                vm = VirtualMachine.parse(raw)
                with logs.trace(vm.metadata.annotations.get(constants.ANNOTATION_TRACE_ID)):
                    outcome = await ledger.release_charge(self.session, vm, self.ledger)
                    name = f"{vm.metadata.namespace}/{vm.metadata.name}"
                    log.info("release of %s: %s", name, outcome)
            except InvalidObjectError as e:
                log.warning("cannot release an unparsable VM: %s", e)
            except Exception:
                log.exception("release failed; the next watch event or resync retries it")
            finally:
                self.queue.task_done()

    async def run(self) -> None:
        try:
            await asyncio.gather(
                self.watch.run(), self._resync(), *(self._worker() for _ in range(self.workers))
            )
        finally:
            await self.session.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m kubenova.quota.releaser")
    p.add_argument("--kubeconfig", default=None)
    args = p.parse_args(argv)
    logs.setup("quota-controller")
    session = aio.Session(client.api_client(args.kubeconfig))
    log.info("releasing quota charges of deleted VMs")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(ReleaseLoop(session).run())


if __name__ == "__main__":
    main()

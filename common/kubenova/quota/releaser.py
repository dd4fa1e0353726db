"""A small release loop: watches VirtualMachines and releases the quota charge of each one
being deleted once only the quota finalizer is left. Does I/O.

`python -m kubenova.quota.releaser` runs it alone, for tests and for clusters
without the operator; the operator calls `ledger.release_charge()` from its own VM handlers
instead. Running both is safe (a release is claimed by a compare-and-swap on the VM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import threading
from typing import Any

import kubernetes

from kubenova.api import constants
from kubenova.api.meta import InvalidObjectError
from kubenova.api.vm import VirtualMachine
from kubenova.kube import client, logs
from kubenova.quota import ledger, store

log = logging.getLogger(__name__)
_watch: Any = kubernetes.watch  # untyped

RESYNC_SECONDS = 30.0


def needs_release(raw: dict[str, Any]) -> bool:
    meta = raw.get("metadata", {})
    finalizers = meta.get("finalizers") or []
    return bool(meta.get("deletionTimestamp")) and finalizers == [constants.QUOTA_FINALIZER]


class ReleaseLoop:
    def __init__(self, api: kubernetes.client.ApiClient, workers: int = 4) -> None:
        self.api = api
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.ledger = ledger.QuotaLedger(store.KubeStore(api))
        self.workers = workers
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._stop = threading.Event()

    def _watch_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        while not self._stop.is_set():
            try:
                listing: Any = self.custom.list_cluster_custom_object(
                    constants.GROUP, constants.VERSION, VirtualMachine.crd.plural
                )
                for raw in listing.get("items", []):
                    if needs_release(raw):
                        loop.call_soon_threadsafe(self.queue.put_nowait, raw)
                w = _watch.Watch()
                for event in w.stream(
                    self.custom.list_cluster_custom_object,
                    constants.GROUP,
                    constants.VERSION,
                    VirtualMachine.crd.plural,
                    resource_version=listing["metadata"]["resourceVersion"],
                    timeout_seconds=int(RESYNC_SECONDS),
                ):
                    if self._stop.is_set() or event["type"] == "ERROR":
                        break
                    if event["type"] != "DELETED" and needs_release(event["object"]):
                        loop.call_soon_threadsafe(self.queue.put_nowait, event["object"])
            except Exception as e:  # keep watching through API hiccups
                log.warning("VM watch failed, relisting: %s", e)
                self._stop.wait(1.0)

    async def _worker(self) -> None:
        while True:
            raw = await self.queue.get()
            try:
                vm = VirtualMachine.parse(raw)
                with logs.trace(vm.metadata.annotations.get(constants.ANNOTATION_TRACE_ID)):
                    outcome = await ledger.release_charge(self.api, vm, self.ledger)
                    name = f"{vm.metadata.namespace}/{vm.metadata.name}"
                    log.info("release of %s: %s", name, outcome)
            except InvalidObjectError as e:
                log.warning("cannot release an unparsable VM: %s", e)
            except Exception:
                log.exception("release failed; the next watch event or resync retries it")
            finally:
                self.queue.task_done()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        thread = threading.Thread(target=self._watch_thread, args=(loop,), daemon=True)
        thread.start()
        try:
            await asyncio.gather(*(self._worker() for _ in range(self.workers)))
        finally:
            self._stop.set()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m kubenova.quota.releaser")
    p.add_argument("--kubeconfig", default=None)
    args = p.parse_args(argv)
    logs.setup("quota-controller")
    api = client.api_client(args.kubeconfig)
    log.info("releasing quota charges of deleted VMs")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(ReleaseLoop(api).run())


if __name__ == "__main__":
    main()

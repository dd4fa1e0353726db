"""VMImage `status.hosts` and `hostCount`, kept by the leader from the Hosts' `status.images`
(`imageholders` is the index). Does I/O.

Host and VMImage events only mark image names dirty (O(changes)); one task writes the dirty
ones whose hosts differ from what the VMImage already says, with a merge patch of those two
fields, which no one else writes (the agents write the import's phase). Replicas that do not
lead keep the index too, so a new leader has nothing to rebuild.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubenova.api.image import MAX_HOSTS, VMImage
from kubenova.api.meta import InvalidObjectError
from kubenova.operator.context import Writes
from kubenova.operator.imageholders import ImageHolders

log = logging.getLogger(__name__)


class ImageHosts:
    def __init__(self, writes: Writes, leading: Callable[[], bool], period: float = 1.0) -> None:
        self.writes = writes
        self.leading = leading
        self.period = period
        self.index = ImageHolders()
        self._checksum: dict[str, str] = {}
        """VMImage name → the checksum its spec names."""
        self._written: dict[str, list[str]] = {}
        """VMImage name → status.hosts as last seen on it."""
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()

    def on_host(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        name = str((body.get("metadata") or {}).get("name", ""))
        if event_type == "DELETED":
            changed = self.index.remove_host(name)
        else:
            images = ((body.get("status") or {}).get("images")) or []
            held = {str(i.get("name")): str(i.get("sha256", "")) for i in images if i.get("name")}
            changed = self.index.update_host(name, held)
        self._mark(changed & self._checksum.keys())

    def on_image(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        name = str((body.get("metadata") or {}).get("name", ""))
        if event_type == "DELETED":
            self._checksum.pop(name, None)
            self._written.pop(name, None)
            self._dirty.discard(name)
            return
        try:
            image = VMImage.parse(dict(body))
        except InvalidObjectError as e:
            log.warning("skipping a VMImage the operator cannot read: %s", e)
            return
        self._checksum[name] = image.spec.checksum
        self._written[name] = list(image.status.hosts)
        if self._wanted(name) != self._written[name]:
            self._mark({name})

    def _wanted(self, name: str) -> list[str]:
        return self.index.holders(name, self._checksum.get(name, ""))

    def _mark(self, names: set[str]) -> None:
        if names:
            self._dirty |= names
            self._wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # a periodic look: leadership may change
                await asyncio.wait_for(self._wake.wait(), self.period * 5)
            self._wake.clear()
            if not self.leading() or not self._dirty:
                continue
            dirty, self._dirty = self._dirty, set()
            for name in sorted(dirty):
                try:
                    await self._write(name)
                except Exception as e:
                    log.warning("VMImage %s: could not write status.hosts: %s", name, e)
                    self._dirty.add(name)
            await asyncio.sleep(self.period)  # a burst of Host reports is one write per image

    async def _write(self, name: str) -> None:
        if name not in self._checksum:
            return
        hosts = self._wanted(name)
        if hosts == self._written.get(name):
            return
        status = {"hosts": hosts[:MAX_HOSTS], "hostCount": len(hosts)}
        await self.writes.cluster_status(VMImage.crd.plural, name, status)  # gone: nothing
        self._written[name] = hosts

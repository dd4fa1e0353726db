"""The agent's side of VMImages: a VM's boot source resolved through the host's image cache,
each import's outcome written to the VMImage's status (through `kubenova.api.image.observe`,
with a resourceVersion precondition) and posted as an event, and the pre-cache pass that
fetches the images this host's pools ask for. Does I/O.

A boot name with no VMImage keeps its older meaning: a file an administrator put in every
host's image store (`kernels/<name>/` for a kernel pair).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from kubenova.api.image import ImportEvent, ImportReport, VMImage, observe
from kubenova.api.meta import InvalidObjectError
from kubenova.api.pool import ResourcePool
from kubenova.api.vm import VirtualMachine
from kubenova.kube import client
from kubenova.kube.events import EventRecorder, ref_of
from kubenova.node_agent import domain_xml, imageplan
from kubenova.node_agent.imagecache import ImageCache, ImageError
from kubenova.node_agent.kubeapi import KubeAPI, RawObject

log = logging.getLogger(__name__)


WAIT_INLINE_SECONDS = 2.0
"""How long a reconcile waits for an image to arrive before it lets the worker go (and looks
again later): a large download must not hold every worker of the host."""
PENDING_RETRY_SECONDS = 2.0


class BootImageError(RuntimeError):
    """A VM's boot source names a VMImage this host cannot use; the message names the field."""


class ImagePending(Exception):  # noqa: N818 - a state, not an error
    """The VMImage is still arriving on this host: look at the VM again after `retry` s."""

    def __init__(self, name: str, retry: float = PENDING_RETRY_SECONDS) -> None:
        super().__init__(f"waiting for VMImage {name} to arrive on this host")
        self.retry = retry


def boot_name(vm: VirtualMachine) -> tuple[str, str] | None:
    """The VM field naming its boot source and the name in it."""
    boot = vm.spec.boot
    if boot.image is not None:
        return "spec.boot.image", boot.image
    if boot.kernel is not None:
        return "spec.boot.kernel.name", boot.kernel.name
    return None


def names_in_use(vms: Iterable[RawObject]) -> set[str]:
    """Boot names of the VMs bound to this host (their images are never evicted)."""
    out: set[str] = set()
    for raw in vms:
        boot = ((raw.get("spec") or {}).get("boot")) or {}
        if boot.get("image"):
            out.add(str(boot["image"]))
        kernel = boot.get("kernel") or {}
        if kernel.get("name"):
            out.add(str(kernel["name"]))
    return out


class Images:
    def __init__(
        self, cache: ImageCache, kube: KubeAPI, events: EventRecorder | None, host: str
    ) -> None:
        self.cache = cache
        self.kube = kube
        self.events = events
        self.host = host
        cache.report = self.report

    async def boot(
        self, vm: VirtualMachine, spec: domain_xml.DomainSpec, files: domain_xml.Storage
    ) -> tuple[domain_xml.DomainSpec, domain_xml.Storage]:
        """`spec` and `files` booting from the cached copy of the VMImage the VM names
        (fetched first if need be); unchanged when no VMImage has that name."""
        named = boot_name(vm)
        if named is None:
            return spec, files
        field, name = named
        raw = await self.kube.vmimage(name)
        if raw is None:
            return spec, files
        try:
            image = VMImage.parse(raw)
        except InvalidObjectError as e:
            raise BootImageError(f"{field} {name!r}: {e}") from None
        wants_kernel = field == "spec.boot.kernel.name"
        if image.spec.is_kernel != wants_kernel:
            what = "a kernel + initrd pair" if image.spec.is_kernel else "a disk image"
            other = "spec.boot.kernel.name" if image.spec.is_kernel else "spec.boot.image"
            raise BootImageError(f"{field} {name!r}: VMImage {name} is {what}; name it in {other}")
        try:
            paths = await self.cache.ensure(image, wait=WAIT_INLINE_SECONDS)
        except TimeoutError:
            raise ImagePending(name) from None
        except ImageError as e:
            raise BootImageError(
                f"{field} {name!r}: VMImage {name} cannot be used on host {self.host}: {e}"
            ) from None
        return imageplan.use_cached(spec, files, paths)

    async def report(self, image: VMImage, report: ImportReport) -> None:
        """The import's outcome in the VMImage's status and as an event on it."""
        kind = "Warning" if report.event is ImportEvent.FAILED else "Normal"
        message = {
            ImportEvent.STARTED: f"host {self.host} is fetching it",
            ImportEvent.SUCCEEDED: f"host {self.host} holds a verified copy ({report.size} bytes)",
            ImportEvent.FAILED: f"host {self.host}: {report.message}",
        }[report.event]
        if self.events is not None:
            self.events.emit(ref_of(image), kind, str(report.event), message)
        await self._record(image.metadata.name, image.metadata.uid, report)

    async def _record(self, name: str, uid: str | None, report: ImportReport) -> None:
        for _ in range(5):
            raw = await self.kube.vmimage(name)
            if raw is None or (uid is not None and (raw.get("metadata") or {}).get("uid") != uid):
                return  # deleted (or replaced) meanwhile
            new = image_status(VMImage.parse(raw), report)
            if new is None:
                return
            try:
                await self.kube.patch_vmimage_status(name, new)
                return
            except Exception as e:
                if not client.is_conflict(e):
                    raise
        log.warning("image %s: status kept changing; %s not recorded", name, report.event)

    async def precache(self, host_labels: dict[str, str]) -> None:
        """Fetch (in the background) the VMImages whose spec.preCache.pools hold this host;
        pin them in the cache, and drop cached images whose VMImage is gone."""
        raws = await self.kube.list_vmimages()
        images: list[VMImage] = []
        for raw in raws:
            try:
                images.append(VMImage.parse(raw))
            except InvalidObjectError as e:
                log.warning("skipping a VMImage the agent cannot read: %s", e)
        selectors: dict[str, bool] = {}
        pinned: set[str] = set()
        for image in images:
            for pool in image.spec.pre_cache.pools:
                if pool not in selectors:
                    selectors[pool] = await self._in_pool(pool, host_labels)
                if selectors[pool]:
                    pinned.add(image.metadata.name)
                    self.cache.prefetch(image)
                    break
        self.cache.pinned = pinned
        await self.cache.forget_missing({i.metadata.name: i.spec.checksum for i in images})

    async def _in_pool(self, pool: str, labels: dict[str, str]) -> bool:
        raw = await self.kube.pool(pool)
        if raw is None:
            return False
        try:
            selector = ResourcePool.parse(raw).spec.host_selector
        except InvalidObjectError as e:
            log.warning("pre-cache: cannot read ResourcePool %s: %s", pool, e)
            return False
        return imageplan.selector_matches(selector, labels)


def image_status(image: VMImage, report: ImportReport) -> RawObject | None:
    """The status patch `report` makes of `image` (None: no change)."""
    now = dt.datetime.now(dt.UTC)
    new = observe(image.status, report, image.metadata.generation, now)
    if new is image.status:
        return None
    status = new.to_dict()
    return {"metadata": {"resourceVersion": image.metadata.resource_version}, "status": status}

"""The host's image cache: VMImages fetched over http(s) into `<image store>/cache/`, verified
before anything uses them. Does I/O (aiohttp, files, `qemu-img`); its decisions are
`imageplan`'s.

    <store>/cache/<name>_<sha>/disk          a verified qcow2 (spec.url), or
    <store>/cache/<name>_<sha>/vmlinuz       a verified kernel + initrd pair (spec.kernel)
    <store>/cache/<name>_<sha>/initrd
    <store>/cache/<name>_<sha>/entry.json    what was verified: sha256, size, uid, last use
    <store>/cache/<name>_<sha>/<file>.part   a download in progress (+ .part.json: its source)

`<sha>` is the first 16 hex digits of the image's checksum ('_' is in no VMImage name): a
VMImage deleted and made anew under the same name with other content gets a folder of its
own, so a running domain's overlay never has its base image replaced under it; the older copy
goes once no VM on the host boots from that name.

A file is streamed to `<file>.part`, its sha256 computed as it arrives and compared with the
spec before it is renamed into place; only then is `entry.json` written, and only an entry
with both is ever used. A raw image is converted to qcow2 after the check, and a qcow2 with a
backing file (it would reach files outside the cache) is refused. There is one download per
image per host however many VMs start at once (one task per name; the rest await it). A
restarted agent resumes a `.part` with an HTTP Range request when the server allows it, else
starts it again; a `.part` whose source changed is deleted. The cache keeps within its size
limit by evicting the least recently used images no VM on the host needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from kubenova.api.image import FileSource, ImageFormat, ImportEvent, ImportReport, VMImage
from kubenova.node_agent import imageplan, metrics

log = logging.getLogger(__name__)

CACHE_FOLDER = "cache"
ENTRY = "entry.json"
PART = ".part"
CHUNK = 1 << 20
PROGRESS_SECONDS = 5.0
Reporter = Callable[[VMImage, ImportReport], Awaitable[None]]
"""Where an import's start, success and failure go (the VMImage's status and events)."""


class ImageError(RuntimeError):
    """An image could not be fetched or verified; `reason` is a CamelCase word for metrics and
    the VMImage's status, the message says what happened and what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Held:
    """A verified cache entry: its files by name (disk, or vmlinuz and initrd)."""

    image: imageplan.CachedImage
    uid: str
    files: dict[str, str]

    @property
    def key(self) -> str:
        return entry_key(self.image.name, self.image.sha256)


def entry_key(name: str, sha256: str) -> str:
    """The cache folder of one image version."""
    return f"{name}_{sha256[:16]}"


@dataclass
class _Failure:
    uid: str
    count: int
    until: float
    error: ImageError


class ImageCache:
    def __init__(
        self,
        store: str,
        host: str,
        limit_bytes: int = 0,
        report: Reporter | None = None,
        needed: Callable[[], set[str]] = set,
        timeout_seconds: float = 60.0,
    ) -> None:
        self.root = Path(store) / CACHE_FOLDER
        self.host = host
        self.limit = limit_bytes
        self.report = report
        self.needed = needed
        """Names of images a VM bound to this host boots from (never evicted)."""
        self.pinned: set[str] = set()
        """Names the host pre-caches for its pools (never evicted)."""
        self.timeout = timeout_seconds
        self.on_change: Callable[[], None] = lambda: None
        """Called when what the cache holds changes (the Host reports it soon)."""
        self._held: dict[str, Held] = {}
        """By entry key (`entry_key`)."""
        self._flights: dict[str, asyncio.Task[Held]] = {}
        """By entry key."""
        self._failed: dict[str, _Failure] = {}
        """By VMImage name."""

    # -- what the cache holds ------------------------------------------------------------

    def load(self) -> None:
        """Read what an earlier run left: verified entries are kept; partial downloads stay
        for `_fetch` to resume (or discard); anything else is removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir():
                continue
            held = _read_entry(folder)
            if held is not None and held.key == folder.name:
                self._held[folder.name] = held
            elif not any(p.name.endswith(PART) for p in folder.iterdir()):
                shutil.rmtree(folder, ignore_errors=True)
        self._gauge()
        log.info(
            "image cache at %s holds %d images (%d bytes)",
            self.root, len(self._held), self.size(),
        )  # fmt: skip

    def held(self) -> list[dict[str, Any]]:
        """Host status.images: what the cache holds, verified."""
        return [
            {"name": h.image.name, "sha256": h.image.sha256, "size": h.image.size}
            for h in sorted(self._held.values(), key=lambda h: (h.image.name, h.image.last_used))
        ]

    def size(self) -> int:
        return sum(h.image.size for h in self._held.values())

    def holds(self, image: VMImage) -> Held | None:
        return self._held.get(entry_key(image.metadata.name, image.spec.checksum))

    # -- fetching ------------------------------------------------------------------------

    async def ensure(self, image: VMImage, wait: float | None = None) -> dict[str, str]:
        """The paths of `image`'s verified files, fetching them first if the cache lacks them
        (one fetch per image, however many callers wait). `ImageError` when it cannot be had;
        a failure is remembered and not retried before its back-off ends. `wait`: give up
        waiting after this many seconds (TimeoutError); the fetch goes on."""
        name = image.metadata.name
        held = self.holds(image)
        if held is not None:
            self._touch(held)
            return held.files
        failure = self._failed.get(name)
        if failure and failure.uid == (image.metadata.uid or "") and time.time() < failure.until:
            raise failure.error
        key = entry_key(name, image.spec.checksum)
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.create_task(self._import(image), name=f"image-{key}")
            self._flights[key] = flight
            flight.add_done_callback(lambda t: self._landed(key, t))
        held = await asyncio.wait_for(asyncio.shield(flight), wait)
        return held.files

    def _landed(self, key: str, flight: asyncio.Task[Held]) -> None:
        self._flights.pop(key, None)
        if not flight.cancelled():
            flight.exception()  # retrieved: a failure nobody awaited is in _failed already

    def prefetch(self, image: VMImage) -> None:
        """Fetch `image` in the background (pre-caching); failures are reported, not raised."""
        key = entry_key(image.metadata.name, image.spec.checksum)
        if self.holds(image) is not None or key in self._flights:
            return

        async def fetch() -> None:
            with contextlib.suppress(ImageError):
                await self.ensure(image)

        task = asyncio.create_task(fetch(), name=f"precache-{image.metadata.name}")
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _import(self, image: VMImage) -> Held:
        name = image.metadata.name
        uid = image.metadata.uid or ""
        t0 = time.monotonic()
        await self._report(image, ImportReport(ImportEvent.STARTED, self.host))
        try:
            try:
                held = await self._fetch_all(image)
            except OSError as e:  # a full or broken disk is this host's, said as such
                raise ImageError(
                    "DiskError", f"the image cache {self.root} could not store it: {e}"
                ) from None
        except ImageError as e:
            n = self._failed[name].count + 1 if name in self._failed else 1
            self._failed[name] = _Failure(uid, n, time.time() + imageplan.retry_after(n), e)
            metrics.IMAGE_IMPORT_FAILURES.labels(self.host, e.reason).inc()
            metrics.IMAGE_IMPORT_SECONDS.labels(self.host, "failed").observe(time.monotonic() - t0)
            log.warning("image %s: import failed (%s): %s", name, e.reason, e)
            await self._report(image, ImportReport(ImportEvent.FAILED, self.host, e.reason, str(e)))
            raise
        self._failed.pop(name, None)
        seconds = time.monotonic() - t0
        metrics.IMAGE_IMPORT_SECONDS.labels(self.host, "ok").observe(seconds)
        log.info("image %s: imported, %d bytes in %.1fs", name, held.image.size, seconds)
        await self._report(
            image,
            ImportReport(
                ImportEvent.SUCCEEDED, self.host, size=held.image.size, sha256=held.image.sha256
            ),
        )
        return held

    async def _report(self, image: VMImage, report: ImportReport) -> None:
        if self.report is None:
            return
        try:
            await self.report(image, report)
        except Exception as e:  # the cache works without the API; the status catches up
            log.warning("image %s: could not report %s: %s", image.metadata.name, report.event, e)

    async def _fetch_all(self, image: VMImage) -> Held:
        name = image.metadata.name
        key = entry_key(name, image.spec.checksum)
        folder = self.root / key
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        files: dict[str, str] = {}
        for file, source in image.spec.files().items():
            final = folder / file
            await self._fetch(image, source, final)
            if file == "disk":
                await _check_disk(final, image.spec.format, name)
            files[file] = str(final)
        size = sum(Path(p).stat().st_size for p in files.values())
        held = Held(
            imageplan.CachedImage(name, image.spec.checksum, size, time.time()),
            image.metadata.uid or "",
            files,
        )
        _write_entry(folder, held)
        self._held[key] = held
        await self.evict()
        self._gauge()
        self.on_change()
        return held

    async def _fetch(self, image: VMImage, source: FileSource, final: Path) -> None:
        """Download `source` into `final`, verified; resume a `.part` an earlier run left."""
        part = final.with_name(final.name + PART)
        marker = final.with_name(final.name + PART + ".json")
        wanted = {"url": source.url, "sha256": source.sha256}
        if final.exists():  # arrived before a crash, entry not yet written: check it again
            digest = hashlib.sha256()
            await asyncio.to_thread(_hash_into, digest, final)
            if digest.hexdigest() == source.sha256:
                return
            final.unlink()
        if part.exists() and _read_json(marker) != wanted:
            part.unlink()  # a download of something else: never mixed into this one
        marker.write_text(json.dumps(wanted))
        for attempt in range(2):
            offset = part.stat().st_size if part.exists() else 0
            digest = hashlib.sha256()
            if offset:
                await asyncio.to_thread(_hash_into, digest, part)
            if await self._get(image, source, part, offset, digest):
                break
            part.unlink(missing_ok=True)  # the server cannot resume: start again
            if attempt:
                raise ImageError("HTTPError", f"GET {source.url}: the download cannot complete")
        got = digest.hexdigest()
        if got != source.sha256:
            part.unlink(missing_ok=True)
            marker.unlink(missing_ok=True)
            raise ImageError(
                "ChecksumMismatch", imageplan.checksum_mismatch(source.sha256, got, source.url)
            )
        await asyncio.to_thread(_fsync, part)
        part.rename(final)
        marker.unlink(missing_ok=True)

    async def _get(
        self, image: VMImage, source: FileSource, part: Path, offset: int, digest: Any
    ) -> bool:
        """One GET into `part` from byte `offset` (`digest` holds the bytes before it); False
        when the server would not resume there."""
        name = image.metadata.name
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_read=self.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(source.url, headers=headers, allow_redirects=True) as resp,
            ):
                if offset and resp.status == 206 and _range_start(resp) == offset:
                    log.info("image %s: resuming %s at byte %d", name, part.name, offset)
                elif offset and resp.status in (200, 206, 416):
                    return False
                elif resp.status != 200:
                    raise ImageError(
                        "HTTPError",
                        f"GET {source.url} answered {resp.status} {resp.reason}; check the URL "
                        "is reachable from the hosts",
                    )
                total = offset + (resp.content_length or 0)
                if resp.content_length:
                    await self.evict(incoming=resp.content_length)
                await self._stream(resp, part, offset, digest, total, name)
                return True
        except aiohttp.ClientError as e:
            raise ImageError(
                "Unreachable", f"GET {source.url} failed: {e}; the download is retried"
            ) from None
        except TimeoutError:
            raise ImageError(
                "Unreachable",
                f"GET {source.url}: no data for {self.timeout:.0f}s; the download is retried",
            ) from None

    async def _stream(
        self,
        resp: aiohttp.ClientResponse,
        part: Path,
        done: int,
        digest: Any,
        total: int,
        name: str,
    ) -> None:
        # Appending after `done` bytes (0: a fresh file); private like the domains' files.
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if done else os.O_TRUNC)
        fd = os.open(part, flags, 0o600)
        last = time.monotonic()
        bytes_counter = metrics.IMAGE_BYTES.labels(self.host)
        try:
            async for chunk in resp.content.iter_chunked(CHUNK):
                digest.update(chunk)
                await asyncio.to_thread(os.write, fd, chunk)
                done += len(chunk)
                bytes_counter.inc(len(chunk))
                if time.monotonic() - last >= PROGRESS_SECONDS:
                    last = time.monotonic()
                    pct = f" ({100 * done // total}%)" if total else ""
                    log.info("image %s: %s %d bytes%s", name, part.name, done, pct)
        finally:
            os.close(fd)

    # -- eviction ------------------------------------------------------------------------

    async def evict(self, incoming: int = 0) -> None:
        """Remove least recently used images no VM here needs, to fit the size limit."""
        names = self.needed() | self.pinned
        keep = {k for k, h in self._held.items() if h.image.name in names} | set(self._flights)
        entries = (
            imageplan.CachedImage(k, h.image.sha256, h.image.size, h.image.last_used)
            for k, h in self._held.items()
        )
        plan = imageplan.plan_eviction(entries, keep, self.limit, incoming)
        for key in plan.remove:
            await self.remove(key)
            metrics.IMAGE_EVICTIONS.labels(self.host).inc()
            log.info("image %s evicted from the cache (least recently used, unused)", key)
        if plan.short:
            log.warning(
                "image cache over its limit by %d bytes: every image left is in use", plan.short
            )

    async def remove(self, key: str) -> None:
        held = self._held.pop(key, None)
        folder = (self.root / key).resolve()
        if folder.parent == self.root.resolve():
            await asyncio.to_thread(shutil.rmtree, folder, True)
        self._gauge()
        if held is not None:
            self.on_change()

    async def forget_missing(self, current: dict[str, str]) -> None:
        """Remove cached images whose VMImage is gone (or is now another image: `current`
        maps each VMImage to its checksum), unless a VM here still boots from that name."""
        keep = self.needed() | self.pinned
        for key, held in list(self._held.items()):
            name = held.image.name
            if current.get(name) == held.image.sha256 or name in keep:
                continue
            if key in self._flights:
                continue
            log.info("image %s removed from the cache: its VMImage is gone", key)
            await self.remove(key)

    def _touch(self, held: Held) -> None:
        image = imageplan.CachedImage(
            held.image.name, held.image.sha256, held.image.size, time.time()
        )
        fresh = Held(image, held.uid, held.files)
        self._held[fresh.key] = fresh
        with contextlib.suppress(OSError):
            _write_entry(self.root / fresh.key, fresh)

    def _gauge(self) -> None:
        metrics.IMAGE_CACHE_BYTES.labels(self.host).set(self.size())
        metrics.IMAGE_CACHE_IMAGES.labels(self.host).set(len(self._held))


# -- files -----------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_entry(folder: Path) -> Held | None:
    raw = _read_json(folder / ENTRY)
    if not isinstance(raw, dict):
        return None
    try:
        files = {str(k): str(folder / k) for k in raw["files"]}
        if not files or not all(Path(p).is_file() for p in files.values()):
            return None
        size = sum(Path(p).stat().st_size for p in files.values())
        image = imageplan.CachedImage(
            str(raw["name"]), str(raw["sha256"]), size, float(raw.get("lastUsed", 0))
        )
        return Held(image, str(raw.get("uid", "")), files)
    except (KeyError, TypeError, ValueError, OSError):
        return None


def _write_entry(folder: Path, held: Held) -> None:
    body = {
        "name": held.image.name,
        "sha256": held.image.sha256,
        "uid": held.uid,
        "size": held.image.size,
        "lastUsed": held.image.last_used,
        "files": sorted(Path(p).name for p in held.files.values()),
    }
    tmp = folder / f"{ENTRY}.tmp"
    tmp.write_text(json.dumps(body))
    tmp.rename(folder / ENTRY)


def _hash_into(digest: Any, path: Path) -> None:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _range_start(resp: aiohttp.ClientResponse) -> int | None:
    """The first byte of a 206 answer's Content-Range ('bytes 100-199/200')."""
    value = resp.headers.get("Content-Range", "")
    unit, _, rest = value.partition(" ")
    start = rest.split("-", 1)[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


async def _run(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise ImageError(
            "ConversionFailed", f"{' '.join(argv)} failed: {err.decode(errors='replace').strip()}"
        )
    return out.decode()


async def _check_disk(path: Path, declared: ImageFormat, name: str) -> None:
    """A verified disk image as the overlays need it: qcow2 without a backing file (raw is
    converted here)."""
    if declared is ImageFormat.RAW:
        out = path.with_name(path.name + ".qcow2" + PART)
        await _run("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(path), str(out))
        out.rename(path)
        return
    info = json.loads(await _run("qemu-img", "info", "--output=json", str(path)))
    found = info.get("format")
    if found != "qcow2":
        path.unlink(missing_ok=True)
        raise ImageError(
            "BadFormat",
            f"VMImage {name}: spec.format is qcow2 but the file is {found}; set format: raw "
            "(it is then converted) in a new VMImage",
        )
    if info.get("backing-filename"):
        path.unlink(missing_ok=True)
        raise ImageError(
            "BadFormat",
            f"VMImage {name}: the qcow2 has a backing file ({info['backing-filename']}); "
            "kubenova uses self-contained images only (qemu-img convert it first)",
        )

"""The operator's watches into the Controller. kopf runs the process (start-up, clean-up) and
the catalogue kinds' events (Flavors, ResourcePools, VMImages, VMMigrations); the kinds whose
events come by the thousand (VirtualMachines, Hosts, the hosts' heartbeat Leases) come through
`kube.watch.Reflector`s started here, which cost a fraction of kopf's per-event machinery.
Only registration lives here; every decision is the Controller's (and the pure modules')."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from kubenova.api import constants
from kubenova.kube import aio, client, watch
from kubenova.operator.controller import Controller, Settings
from kubenova.operator.images import ImageHosts

log = logging.getLogger(__name__)

_settings: Settings | None = None
_controller: Controller | None = None
_image_hosts: ImageHosts | None = None
_image_task: asyncio.Task[None] | None = None
_reflectors: list[asyncio.Task[None]] = []


def configure(settings: Settings) -> None:
    """Called by __main__ before kopf starts."""
    global _settings
    _settings = settings


def _ctl() -> Controller:
    if _controller is None:
        raise kopf.TemporaryError("the controller is starting", delay=1)
    return _controller


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _controller
    if _settings is None:
        raise RuntimeError("kubenova.operator.handlers.configure() was not called")
    # Our own Lease election decides who acts; kopf's peering would only pause replicas.
    settings.peering.standalone = True
    # kopf's watches can stall silently without these.
    settings.watching.server_timeout = _settings.watch_timeout
    settings.watching.client_timeout = _settings.watch_timeout + 15
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 30
    settings.posting.level = logging.WARNING
    _controller = Controller(_settings, client.api_client())
    _controller.start()
    global _image_hosts, _image_task
    _image_hosts = ImageHosts(_controller.writes, _controller.leading)
    _image_task = asyncio.create_task(_image_hosts.run(), name="vmimage-hosts")
    _start_reflectors(_settings, _controller, _image_hosts)
    log.info("operator %s started", _settings.identity)


def _start_reflectors(settings: Settings, ctl: Controller, images: ImageHosts) -> None:
    def host_event(event_type: str, body: aio.RawObject) -> None:
        ctl.on_host(event_type, body)
        images.on_host(event_type, body)

    group = f"/apis/{constants.GROUP}/{constants.VERSION}"
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{settings.namespace}/leases"
    for name, path, on_event in (
        ("virtualmachines", f"{group}/virtualmachines", ctl.on_vm),
        ("hosts", f"{group}/hosts", host_event),
        ("leases", leases, ctl.on_lease),
    ):
        r = watch.Reflector(ctl.http, path, on_event, name=name, timeout=settings.watch_timeout)
        ctl.watches.append(r)
        _reflectors.append(asyncio.create_task(r.run(), name=f"watch-{name}"))


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    for task in _reflectors:
        task.cancel()
    await asyncio.gather(*_reflectors, return_exceptions=True)
    if _image_task is not None:
        _image_task.cancel()
    if _controller is not None:
        await _controller.stop()


@kopf.on.event(constants.GROUP, constants.VERSION, "flavors")
async def flavor_event(event: kopf.RawEvent, **_: Any) -> None:
    _ctl().on_flavor(event["type"], event["object"])


@kopf.on.event(constants.GROUP, constants.VERSION, "resourcepools")
async def pool_event(event: kopf.RawEvent, **_: Any) -> None:
    _ctl().on_pool(event["type"], event["object"])


@kopf.on.event(constants.GROUP, constants.VERSION, "vmimages")
async def image_event(event: kopf.RawEvent, **_: Any) -> None:
    if _image_hosts is None:
        raise kopf.TemporaryError("the operator is starting", delay=1)
    _image_hosts.on_image(event["type"], event["object"])


@kopf.on.event(constants.GROUP, constants.VERSION, "vmmigrations")
async def migration_event(event: kopf.RawEvent, **_: Any) -> None:
    _ctl().on_migration(event["type"], event["object"])

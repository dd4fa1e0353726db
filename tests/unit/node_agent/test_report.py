"""What the agent reports goes through the VM lifecycle state machine: the event it observed
becomes the phase, the conditions and one history entry, whoever the VM's last writer was."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from kubenova.api import constants
from kubenova.api.lifecycle import Event
from kubenova.api.vm import RunStrategy, VMPhase
from kubenova.node_agent import decide
from kubenova.node_agent.config import from_env
from kubenova.node_agent.hypervisor import DomainState, StopCause
from kubenova.node_agent.reconcile import Reconciler
from tests.unit.node_agent.builders import NOW, make_domain, make_vm

pytestmark = pytest.mark.unit


def reconciler() -> Reconciler:
    # _observe touches neither libvirt nor the API: no hypervisor or client is needed.
    return Reconciler(from_env({"NODE_NAME": "h1"}), cast(Any, None), cast(Any, None))


def wish(strategy: RunStrategy) -> decide.Wish:
    return decide.Wish(uid="u", run_strategy=strategy)


def test_a_vm_marked_unknown_is_reported_back_then_running_and_ready() -> None:
    vm = make_vm(status={"phase": "Unknown", "host": "h1"})
    status, made = reconciler()._observe(vm, Event.DOMAIN_RUNNING, "", NOW)
    assert status.phase is VMPhase.RUNNING
    assert [c.event for c in made] == [Event.HOST_BACK, Event.DOMAIN_RUNNING]
    assert [h.action for h in status.history] == ["HostBack", "Started"]
    assert {h.actor for h in status.history} == {"agent/h1"}
    ready = {c.type: c.status.value for c in status.conditions}[constants.COND_READY]
    assert ready == "True"


def test_seeing_the_same_phase_again_writes_nothing() -> None:
    r = reconciler()
    first, _ = r._observe(make_vm(status={"phase": "Scheduled"}), Event.DOMAIN_RUNNING, "", NOW)
    vm = make_vm(status=first.to_dict())
    again, made = r._observe(vm, Event.DOMAIN_RUNNING, "", NOW)
    assert made == [] and again is vm.status


@pytest.mark.parametrize(
    ("strategy", "event"),
    [
        (RunStrategy.MANUAL, Event.GUEST_SHUTDOWN),
        (RunStrategy.RERUN_ON_FAILURE, Event.GUEST_SHUTDOWN),
        (RunStrategy.HALTED, Event.DOMAIN_STOPPED),
        (RunStrategy.ALWAYS, Event.DOMAIN_STARTING),
    ],
)
def test_a_guest_that_powered_itself_off_is_reported_as_such(
    strategy: RunStrategy, event: Event
) -> None:
    off = make_domain(DomainState.SHUTOFF, StopCause.SHUTDOWN)
    assert decide.report(wish(strategy), off, stopping=False).event is event


class Recording:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch_vm_status(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        self.patches.append(body)


def test_a_vm_marked_unknown_is_reported_back_only_while_the_heartbeat_is_fresh() -> None:
    # With the Lease run out the operator marks the VM Unknown again at once: reporting it
    # back then would make the two take turns, two history entries a turn (seen in a chaos
    # run: the Scheduled entry fell off the bounded history of 15 VMs).
    kube = Recording()
    r = Reconciler(from_env({"NODE_NAME": "h1"}), cast(Any, None), cast(Any, kube))
    vm = make_vm(status={"phase": "Unknown", "host": "h1"})
    r.heartbeat_fresh = lambda: False
    asyncio.run(r._write(vm, Event.DOMAIN_RUNNING, "", {}))
    assert kube.patches == []
    r.heartbeat_fresh = lambda: True
    asyncio.run(r._write(vm, Event.DOMAIN_RUNNING, "", {}))
    (body,) = kube.patches
    assert body["status"]["phase"] == "Running"
    assert [h["action"] for h in body["status"]["history"]][-2:] == ["HostBack", "Started"]

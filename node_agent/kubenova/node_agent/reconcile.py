"""One reconcile pass for one VM: observe its domain, `decide.decide()`, carry the actions
out, observe again and report what it saw. Does I/O (libvirt through `Hypervisor`, Kubernetes
through `KubeAPI`).

The report goes through the VM lifecycle state machine (`kubenova.api.lifecycle.apply`), the
same path as the operator's phase changes: the phase, the conditions (`Ready`), the history
entry and the Kubernetes event of a change come from one place and never disagree."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubenova.api import constants, lifecycle
from kubenova.api.flavor import FlavorSpec
from kubenova.api.lifecycle import Change, Event
from kubenova.api.meta import InvalidObjectError
from kubenova.api.vm import RunStrategy, VirtualMachine, VirtualMachineStatus, VMPhase, VMResources
from kubenova.kube import client, logs
from kubenova.kube.events import EventRecorder, ref_of
from kubenova.node_agent import credentials, decide, domain_xml, storage
from kubenova.node_agent.config import AgentConfig
from kubenova.node_agent.decide import Action
from kubenova.node_agent.hypervisor import Domain, Hypervisor
from kubenova.node_agent.images import ImagePending, Images
from kubenova.node_agent.kubeapi import KubeAPI, RawObject

log = logging.getLogger(__name__)

USER_DATA_KEYS = ("userdata", "userData")
"""Keys of a userDataSecretRef Secret that hold the user data, as KubeVirt reads them."""
_OPERATOR_PHASES = (VMPhase.PENDING, VMPhase.MIGRATING)
"""Phases in which the VM is the operator's business, not the agent's."""


def _has_seed(vm: VirtualMachine) -> bool:
    """Whether the VM's domain was defined with a cloud-init seed."""
    ci = vm.spec.cloud_init
    return bool(vm.spec.access_credentials) or (
        ci is not None and bool(ci.user_data or ci.user_data_secret_ref or ci.network_data)
    )


class ReconcileError(RuntimeError):
    """A pass failed in a way worth telling the VM's user; the message says what to do."""


@dataclass(frozen=True)
class Outcome:
    requeue_after: float | None = None


class Reconciler:
    def __init__(
        self,
        cfg: AgentConfig,
        hv: Hypervisor,
        kube: KubeAPI,
        events: EventRecorder | None = None,
    ) -> None:
        self.cfg = cfg
        self.hv = hv
        self.kube = kube
        self.events = events
        self.actor = f"agent/{cfg.host}"
        self.images: Images | None = None
        """The host's image cache (None: simulated hosts, which make no files)."""
        self._stopping: dict[str, dt.datetime] = {}
        self._seeded: set[str] = set()
        """Domains defined in the pass under way, whose seed needs no refresh at START."""
        self.heartbeat_fresh: Callable[[], bool] = lambda: True
        """Whether this host's heartbeat Lease was renewed within its duration (the agent's own
        view). A VM the operator marked Unknown is reported back only then: while the Lease
        stays expired the operator would mark it Unknown again at once, and the two would
        take turns, each turn two history entries, until the Lease is renewed."""

    async def reconcile(self, raw: RawObject) -> Outcome:
        try:
            vm = VirtualMachine.parse(raw)
        except InvalidObjectError as e:
            log.error("skipping a VM the agent cannot read: %s", e)
            return Outcome()
        key = f"{vm.metadata.namespace}/{vm.metadata.name}"
        deleting = vm.metadata.deletion_timestamp is not None
        if not deleting and (
            vm.status.host != self.cfg.host or vm.status.phase in _OPERATOR_PHASES
        ):
            return Outcome()  # bound elsewhere, or the operator has not finished binding
        if deleting and constants.VM_FINALIZER not in vm.metadata.finalizers:
            return Outcome()
        with logs.trace(vm.metadata.annotations.get(constants.ANNOTATION_TRACE_ID)):
            try:
                return await self._pass(vm, key, deleting)
            except ImagePending as e:  # the domain is defined once the image is here
                log.info("VM %s: %s", key, e, extra={"vm": key})
                await self._write(vm, Event.DOMAIN_STARTING, str(e), {})
                return Outcome(requeue_after=e.retry)
            except Exception as e:
                if client.is_conflict(e):
                    raise  # a newer VM is on its way through the watch
                log.warning("reconcile of VM %s failed: %s", key, e, extra={"vm": key})
                if not deleting:
                    await self._report_failure(vm, str(e))
                raise

    async def _pass(self, vm: VirtualMachine, key: str, deleting: bool) -> Outcome:
        # Evicted from this host (a drain, evictionStrategy Shutdown): stop it as if Halted.
        evicted = vm.metadata.annotations.get(constants.ANNOTATION_EVICT) == self.cfg.host
        wish = decide.Wish(
            uid=vm.metadata.uid or "",
            run_strategy=RunStrategy.HALTED if evicted else vm.spec.run_strategy,
            deleting=deleting,
            restart_token=vm.metadata.annotations.get(constants.ANNOTATION_RESTART_REQUESTED),
            grace_seconds=vm.spec.termination_grace_period_seconds,
        )
        name = domain_xml.domain_name(vm.metadata.namespace or "default", vm.metadata.name)
        domain = await self.hv.domain(name)
        now = dt.datetime.now(dt.UTC)
        decision = decide.decide(wish, domain, self._stopping.get(key), now)
        if decision.stopping_since is None:
            self._stopping.pop(key, None)
        else:
            self._stopping[key] = decision.stopping_since
        if decision.actions:
            log.info(
                "VM %s: %s",
                key,
                ", ".join(decision.actions),
                extra={"vm": key, "domain": name, "actions": list(decision.actions)},
            )
        self._seeded.discard(name)
        for action in decision.actions:
            await self._act(action, vm, name, wish)
        if Action.RELEASE_FINALIZER in decision.actions:
            return Outcome()
        if decision.actions:
            domain = await self.hv.domain(name)
        await self._report(vm, wish, domain, stopping=key in self._stopping)
        return Outcome(requeue_after=decision.requeue_after)

    async def _act(self, action: Action, vm: VirtualMachine, name: str, wish: decide.Wish) -> None:
        folder = f"{self.cfg.domains.state_dir}/{name}"
        match action:
            case Action.DEFINE:
                spec, files = await self._plan(vm)
                if self.images is not None:
                    spec, files = await self.images.boot(vm, spec, files)
                if self.cfg.manage_storage:
                    await storage.prepare(files)
                await self.hv.define(domain_xml.build(spec))
                self._seeded.add(name)
            case Action.START:
                if name in self._seeded:
                    self._seeded.discard(name)  # defined in this pass: the seed is current
                elif self.cfg.manage_storage and _has_seed(vm):
                    await self._refresh_seed(vm)
                await self.hv.start(name)
            case Action.SHUTDOWN:
                await self.hv.shutdown(name)
            case Action.DESTROY:
                await self.hv.destroy(name)
            case Action.REBOOT:
                await self.hv.reboot(name)
            case Action.MARK_RESTARTED:
                await self.hv.set_restart_token(name, wish.restart_token or "")
            case Action.UNDEFINE:
                await self.hv.undefine(name)
            case Action.CLEAN_STORAGE:
                if self.cfg.manage_storage:
                    await storage.remove(folder, self.cfg.domains.state_dir)
            case Action.RELEASE_FINALIZER:
                await self.kube.release_finalizer(vm.metadata.namespace or "", vm.metadata.name)
                log.info("VM %s: domain removed, finalizer released", vm.metadata.name)

    async def _plan(self, vm: VirtualMachine) -> tuple[domain_xml.DomainSpec, domain_xml.Storage]:
        return domain_xml.plan(
            vm,
            await self._size(vm),
            self.cfg.domains,
            await self._flavor_spec(vm),
            await self._secret_user_data(vm),
            await self._ssh_keys(vm),
        )

    async def _refresh_seed(self, vm: VirtualMachine) -> None:
        """Every start reads the Secrets again, so edited keys (or Secret user data) reach the
        guest at its next boot. A Secret that is gone or wrong fails the start, with the reason;
        an API server that cannot be reached does not keep a crashed guest down: it starts with
        the seed it has."""
        try:
            _spec, files = await self._plan(vm)
        except (ReconcileError, credentials.CredentialError, domain_xml.DomainXMLError):
            raise
        except Exception as e:
            if client.is_conflict(e):
                raise
            log.warning(
                "VM %s: starting with the cloud-init seed it has; the Secrets could not be "
                "read: %s", vm.metadata.name, e,
            )  # fmt: skip
            return
        if await storage.refresh_seed(files):
            log.info("VM %s: cloud-init seed rebuilt", vm.metadata.name)

    async def _ssh_keys(self, vm: VirtualMachine) -> tuple[str, ...]:
        """The SSH public keys of `spec.accessCredentials`, from Secrets in the VM's own
        namespace (the reference has no namespace), checked line by line. Errors name the
        Secret, key and line, never a value: a Secret may hold something else entirely."""
        ns = vm.metadata.namespace or ""
        sets: list[list[str]] = []
        for i, cred in enumerate(vm.spec.access_credentials):
            secret = cred.ssh_public_key.source.secret.secret_name
            field = f"spec.accessCredentials[{i}].sshPublicKey.source.secret"
            data = await self.kube.secret_data(ns, secret)
            if data is None:
                raise ReconcileError(
                    f"VM {ns}/{vm.metadata.name}: {field}: Secret {secret!r} does not exist in "
                    f"namespace {ns}; create it with SSH public keys (one per line) in its data"
                )
            where = credentials.Source(f"VM {ns}/{vm.metadata.name}: {field}", secret)
            sets.append(credentials.parse_keys(where, data))
        return credentials.collect(sets)

    async def _size(self, vm: VirtualMachine) -> VMResources:
        if vm.spec.resources is not None:
            return vm.spec.resources
        flavor = await self.kube.flavor(vm.spec.flavor)
        if flavor is None:
            raise ReconcileError(
                f"VM {vm.metadata.namespace}/{vm.metadata.name}: spec.flavor {vm.spec.flavor!r} "
                "does not exist and spec.resources is unset; create the Flavor"
            )
        f = flavor.spec
        gpus: dict[str, int] = {g.model: g.count for g in f.gpus}
        return VMResources(vcpus=f.vcpus, memory=f.memory, disk=f.disk, gpus=gpus)

    async def _secret_user_data(self, vm: VirtualMachine) -> bytes | None:
        """The user data `spec.cloudInit.userDataSecretRef` names (KubeVirt's keys), from the
        VM's own namespace; None when the VM names no Secret. Errors name the Secret and the
        keys, never a value."""
        ref = vm.spec.cloud_init.user_data_secret_ref if vm.spec.cloud_init else None
        if ref is None:
            return None
        ns = vm.metadata.namespace or ""
        where = f"VM {ns}/{vm.metadata.name}: spec.cloudInit.userDataSecretRef"
        data = await self.kube.secret_data(ns, ref.name)
        if data is None:
            raise ReconcileError(
                f"{where}: Secret {ref.name!r} does not exist in namespace {ns}; create it "
                f"with the user data under the key {USER_DATA_KEYS[0]}"
            )
        for key in USER_DATA_KEYS:
            if key in data:
                return data[key]
        raise ReconcileError(
            f"{where}: Secret {ref.name!r} has no key {' or '.join(USER_DATA_KEYS)}; "
            f"put the user data under {USER_DATA_KEYS[0]}"
        )

    async def _flavor_spec(self, vm: VirtualMachine) -> FlavorSpec | None:
        flavor = await self.kube.flavor(vm.spec.flavor)
        return flavor.spec if flavor is not None else None

    async def _report(
        self, vm: VirtualMachine, wish: decide.Wish, domain: Domain | None, stopping: bool
    ) -> None:
        r = decide.report(wish, domain, stopping)
        addresses = await self.hv.addresses(domain.name) if domain and domain.active else []
        fields: dict[str, Any] = {
            "domainUUID": domain.uuid if domain else None,
            "ip": addresses[0] if addresses else None,
            "addresses": addresses,
        }
        if domain is not None and domain.serial_log:
            fields["serialLog"] = domain.serial_log
        await self._write(vm, r.event, r.reason, fields)

    async def _report_failure(self, vm: VirtualMachine, message: str) -> None:
        try:
            await self._write(vm, Event.DOMAIN_FAILED, message[:1000], {})
        except Exception as e:  # the error itself is logged by the caller
            log.debug("could not report the failure: %s", e)

    def _observe(
        self, vm: VirtualMachine, event: Event, reason: str, now: dt.datetime
    ) -> tuple[VirtualMachineStatus, list[Change]]:
        """The VM's status after what the agent saw, through the lifecycle state machine, and
        the changes that made a history entry (each gets its Kubernetes event)."""
        trace_id = logs.current_trace_id()
        status = vm.status
        made: list[Change] = []
        steps: list[Change] = []
        if status.phase is VMPhase.UNKNOWN and event is not Event.DOMAIN_UNKNOWN:
            # The operator marked the VM Unknown when this host went silent; it is back.
            message = f"the agent on {self.cfg.host} reports the VM again"
            steps.append(Change(Event.HOST_BACK, self.actor, message, trace_id))
        steps.append(Change(event, self.actor, reason, trace_id, reason=reason or None))
        for change in steps:
            status, changed = lifecycle.apply(status, change, now)
            if changed:
                made.append(change)
        return status, made

    async def _write(
        self, vm: VirtualMachine, event: Event, reason: str, fields: dict[str, Any]
    ) -> None:
        current = vm.status
        if current.phase is VMPhase.UNKNOWN and not self.heartbeat_fresh():
            log.info(
                "VM %s stays Unknown until this host's heartbeat is renewed",
                f"{vm.metadata.namespace}/{vm.metadata.name}",
            )
            return  # the agent resyncs every VM once its Lease is renewed
        now = dt.datetime.now(dt.UTC)
        new, made = self._observe(vm, event, reason, now)
        unchanged = (
            new is current
            and current.domain_uuid == fields.get("domainUUID", current.domain_uuid)
            and current.addresses == fields.get("addresses", current.addresses)
            and current.observed_generation == vm.metadata.generation
        )
        if unchanged:
            return
        body_status: dict[str, Any] = {
            "phase": str(new.phase),
            "reason": new.reason,
            "conditions": [c.to_dict() for c in new.conditions],
            "history": [h.to_dict() for h in new.history],
            **fields,
            "observedGeneration": vm.metadata.generation,
        }
        body = {
            "metadata": {"resourceVersion": vm.metadata.resource_version},
            "status": body_status,
        }
        key = f"{vm.metadata.namespace}/{vm.metadata.name}"
        await self.kube.patch_vm_status(vm.metadata.namespace or "", vm.metadata.name, body)
        for change in made:
            what = lifecycle.action(change.event)
            if self.events is not None:
                kind = "Warning" if change.warning else "Normal"
                message = change.message or f"{what} on host {self.cfg.host}"
                self.events.emit(ref_of(vm), kind, what, message)
        if new.phase is not current.phase:
            log.info("VM %s is %s", key, new.phase, extra={"vm": key, "phase": str(new.phase)})

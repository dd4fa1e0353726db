"""The MutatingWebhookConfiguration and ValidatingWebhookConfiguration that route kubenova's
kinds to the admission server, by URL (tests, development) or by Service (the chart). Pure.

Both fail closed (`failurePolicy: Fail`): an unreachable webhook must not let an uncharged VM
in. Only the main resources are routed, never `/status`, so status writes by the operator and
the agents (phase changes, a migration's progress) never pass through admission and are never
charged. Deletes never depend on the webhook either: VM deletes are not routed, and neither
is an update of an object being deleted that leaves its spec alone (a finalizer coming off),
so an unreachable webhook cannot keep a VM from going away.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from kubenova.api import constants

NAME = "kubenova"

NOT_A_FINALIZER_UPDATE = {
    "name": "not-a-finalizer-update",
    "expression": "request.operation != 'UPDATE' || !has(object.metadata.deletionTimestamp)"
    " || !has(object.spec) || !has(oldObject.spec) || object.spec != oldObject.spec",
}
"""matchCondition: skip updates of an object being deleted that leave its spec as it was."""


@dataclass(frozen=True)
class Endpoint:
    """Where the API server reaches the webhook: `url` (https://host:port) or a Service."""

    ca_bundle: bytes
    url: str | None = None
    service_namespace: str | None = None
    service_name: str | None = None
    service_port: int = 443

    def client_config(self, path: str) -> dict[str, Any]:
        config: dict[str, Any] = {"caBundle": base64.b64encode(self.ca_bundle).decode()}
        if self.url is not None:
            config["url"] = self.url.rstrip("/") + path
        else:
            config["service"] = {
                "namespace": self.service_namespace,
                "name": self.service_name,
                "path": path,
                "port": self.service_port,
            }
        return config


def _rule(operations: list[str], resources: list[str], scope: str = "Namespaced") -> dict[str, Any]:
    return {
        "apiGroups": [constants.GROUP],
        "apiVersions": [constants.VERSION],
        "operations": operations,
        "resources": resources,
        "scope": scope,
    }


def configurations(
    endpoint: Endpoint,
    *,
    name: str = NAME,
    namespace_selector: dict[str, Any] | None = None,
    timeout_seconds: int = 10,
) -> list[dict[str, Any]]:
    """Both configurations. `namespace_selector` limits the namespaced kinds (tests use it to
    keep the webhook to their own namespaces)."""
    common: dict[str, Any] = {
        "admissionReviewVersions": ["v1"],
        "failurePolicy": "Fail",
        "timeoutSeconds": timeout_seconds,
        "matchPolicy": "Equivalent",
    }
    scoped = dict(
        common, namespaceSelector=namespace_selector or {}, matchConditions=[NOT_A_FINALIZER_UPDATE]
    )
    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            dict(
                scoped,
                name=f"vm.mutate.{constants.GROUP}",
                clientConfig=endpoint.client_config("/mutate"),
                rules=[_rule(["CREATE"], ["virtualmachines"])],
                sideEffects="None",
                reinvocationPolicy="Never",
            )
        ],
    }
    validating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            dict(
                scoped,
                name=f"namespaced.validate.{constants.GROUP}",
                clientConfig=endpoint.client_config("/validate"),
                rules=[
                    _rule(["CREATE", "UPDATE"], ["virtualmachines"]),
                    _rule(["CREATE"], ["vmquotas", "vmmigrations"]),
                ],
                # The quota charge is a side effect; dry runs are checked but not charged.
                sideEffects="NoneOnDryRun",
            ),
            dict(
                common,
                name=f"cluster.validate.{constants.GROUP}",
                clientConfig=endpoint.client_config("/validate"),
                rules=[
                    _rule(["UPDATE", "DELETE"], ["flavors"], "Cluster"),
                    _rule(["CREATE", "UPDATE"], ["resourcepools"], "Cluster"),
                ],
                sideEffects="None",
            ),
        ],
    }
    return [mutating, validating]

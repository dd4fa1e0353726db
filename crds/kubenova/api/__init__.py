"""kubenova's API: typed models of the kubenova.io/v1alpha1 kinds, quantities and the names
every component shares. Pure: imports no Kubernetes client, kopf or libvirt.

The CRDs in `crds/` are generated from these models by `kubenova-crdgen`.
"""

from kubenova.api.flavor import Flavor
from kubenova.api.host import Host
from kubenova.api.image import VMImage
from kubenova.api.meta import InvalidObjectError, Resource
from kubenova.api.migration import VMMigration
from kubenova.api.pool import ResourcePool
from kubenova.api.quantity import Quantity, QuantityError
from kubenova.api.quota import VMQuota
from kubenova.api.vm import VirtualMachine

KINDS: tuple[type[Resource], ...] = (
    VirtualMachine,
    Flavor,
    ResourcePool,
    Host,
    VMQuota,
    VMMigration,
    VMImage,
)
"""Every kind kubenova serves, in the order its CRDs are written."""

__all__ = [
    "KINDS",
    "Flavor",
    "Host",
    "InvalidObjectError",
    "Quantity",
    "QuantityError",
    "Resource",
    "ResourcePool",
    "VMImage",
    "VMMigration",
    "VMQuota",
    "VirtualMachine",
]


def kind_by_name(kind: str) -> type[Resource]:
    """The model class of a kind, e.g. 'VirtualMachine'."""
    for k in KINDS:
        if k.__name__ == kind:
            return k
    raise KeyError(f"unknown kind {kind!r}; kubenova serves {', '.join(k.__name__ for k in KINDS)}")

from __future__ import annotations

import pytest

from kubenova.api import Flavor, Host, ResourcePool, VirtualMachine
from kubenova.scheduler import adapt, model, status

pytestmark = pytest.mark.unit


def test_a_host_becomes_whole_mib_and_a_hostname_label() -> None:
    h = Host.parse(
        {
            "apiVersion": "kubenova.io/v1alpha1",
            "kind": "Host",
            "metadata": {"name": "n1", "labels": {"rack": "r1"}},
            "spec": {"unschedulable": True, "taints": [{"key": "k", "effect": "NoExecute"}]},
            "status": {
                "phase": "Ready",
                "capacity": {
                    "cpus": 64,
                    "memory": "256Gi",
                    "disk": "1500000000000",
                    "gpus": [{"model": "a100", "pciAddress": "0000:3b:00.0"}],
                },
            },
        }
    )
    info = adapt.host(h, heartbeat_at=5.0)
    assert (info.cpus, info.memory_mib, info.disk_mib) == (64, 262144, 1430511)
    assert info.labels == {"rack": "r1", "kubenova.io/hostname": "n1"}
    assert info.gpus == (model.GPU("a100", "0000:3b:00.0"),)
    assert info.taints == (model.Taint("k", "", model.TaintEffect.NO_EXECUTE),)
    assert info.unschedulable and info.ready and info.heartbeat_at == 5.0


def test_a_vm_takes_its_own_resources_rounded_up_and_its_placement() -> None:
    vm = VirtualMachine.parse(
        {
            "apiVersion": "kubenova.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "flavor": "m1",
                "boot": {"image": "debian.qcow2"},
                "priority": 7,
                "resources": {"vcpus": 2, "memory": "1500M", "disk": "10Gi", "gpus": {"t4": 1}},
                "placement": {
                    "nodeSelector": {"zone": "a"},
                    "groups": ["web"],
                    "antiAffinity": [{"group": "web", "topologyKey": "rack", "maxPerDomain": 2}],
                    "tolerations": [{"key": "gpu", "operator": "Exists"}],
                },
            },
        }
    )
    r = adapt.vm(vm, None, created_at=3.0)
    assert r.key == "shop/web" and r.pool == "general" and r.priority == 7
    assert r.size == model.Size(2, 1431, 10240, (("t4", 1),))
    assert r.anti_affinity == (model.GroupRule("web", "rack", 2),)
    assert r.tolerations == (model.Toleration("gpu", exists=True),)
    assert r.node_selector == (("zone", "a"),)


def test_a_vm_without_resources_or_a_known_flavor_is_refused_by_name() -> None:
    vm = VirtualMachine.parse(
        {
            "apiVersion": "kubenova.io/v1alpha1",
            "kind": "VirtualMachine",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"flavor": "m1", "boot": {"image": "x"}},
        }
    )
    with pytest.raises(ValueError, match=r"VirtualMachine shop/web: .*flavor m1 is unknown"):
        adapt.vm(vm, None, 0.0)
    f = Flavor.parse(
        {
            "apiVersion": "kubenova.io/v1alpha1",
            "kind": "Flavor",
            "metadata": {"name": "m1"},
            "spec": {"vcpus": 2, "memory": "4Gi", "gpus": [{"model": "t4", "count": 2}]},
        }
    )
    assert adapt.vm(vm, adapt.flavor(f).size, 0.0).size == model.Size(2, 4096, 10240, (("t4", 2),))


def test_a_pool_takes_its_policy_weights_unless_given_explicit_ones() -> None:
    doc = {
        "apiVersion": "kubenova.io/v1alpha1",
        "kind": "ResourcePool",
        "metadata": {"name": "gpu"},
        "spec": {
            "hostSelector": {
                "matchLabels": {"pool": "gpu"},
                "matchExpressions": [{"key": "rack", "operator": "NotIn", "values": ["r9"]}],
            },
            "overcommit": {"cpu": 4.0},
            "placementPolicy": "Spread",
            "namespaces": ["ml"],
            "reservations": [{"flavor": "g1", "count": 3}],
        },
    }
    p = adapt.pool(ResourcePool.parse(doc))
    assert p.weights == model.Weights(pack=0, spread=1, load=0)
    assert p.cpu_ratio == 4.0 and p.namespaces == {"ml"} and p.reservations == (("g1", 3),)
    assert p.selector.matches({"pool": "gpu", "rack": "r1"})
    assert not p.selector.matches({"pool": "gpu", "rack": "r9"})
    doc["spec"]["scoreWeights"] = {"pack": 2, "load": 3}  # type: ignore[index]
    assert adapt.pool(ResourcePool.parse(doc)).weights == model.Weights(2, 0, 3)


def test_pool_status_goes_back_to_the_api_in_quantities() -> None:
    st = status.PoolStatus(
        "general",
        2,
        1,
        status.Amount(64, 262144, 1024, 0),
        status.Amount(8, 16384, 0, 0),
        status.Amount(),
        {"m1": 5},
    )
    api = adapt.pool_status(st)
    assert str(api.capacity.memory) == "256Gi"
    assert api.available[0].flavor == "m1" and api.available[0].count == 5

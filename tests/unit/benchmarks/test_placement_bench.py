"""The pure parts of benchmarks/placement_bench.py: the object mix both sides get, the bodies
it creates, and how it reads kube-apiserver's metrics, /proc and py-spy's stacks."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter

import pytest

from kubenova.api.host import HostPhase, HostStatus
from kubenova.api.vm import VirtualMachine
from tests.conftest import ROOT
from tests.unit.benchmarks import load

pytestmark = pytest.mark.unit


pb = load("placement_bench")
NOW = dt.datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)


# -- the mix -----------------------------------------------------------------------------------


def test_the_mix_has_exactly_sixty_thirty_ten_percent() -> None:
    mix = pb.object_mix(10_000)
    counts = Counter((s.vcpus, s.memory_gib) for s in mix)
    assert counts == {(1, 2): 6000, (2, 4): 3000, (4, 8): 1000}


def test_the_mix_of_an_uneven_count_rounds_by_largest_remainder() -> None:
    counts = Counter(s.vcpus for s in pb.object_mix(7))  # 4.2, 2.1, 0.7
    assert counts == {1: 4, 2: 2, 4: 1}
    assert pb.object_mix(0) == []


def test_both_sides_get_the_same_order_and_it_is_shuffled() -> None:
    mix = pb.object_mix(1000)
    assert mix == pb.object_mix(1000)
    assert mix != sorted(mix, key=lambda s: s.vcpus)
    assert mix != pb.object_mix(1000, seed=8)


def test_names_sort_in_creation_order() -> None:
    names = pb.object_names(100_000)
    assert names == sorted(names)
    assert len(set(names)) == 100_000
    assert pb.host_names(3) == ["h-00000", "h-00001", "h-00002"]


# -- the bodies --------------------------------------------------------------------------------


def test_a_vm_body_is_a_valid_virtual_machine_in_the_pool() -> None:
    size = pb.SIZES[1]
    vm = VirtualMachine.model_validate(pb.vm_body("o-00001", size))
    assert (vm.spec.flavor, vm.spec.pool) == (size.flavor, pb.POOL)


def test_a_host_status_is_ready_with_the_same_capacity_as_a_node() -> None:
    status = HostStatus.model_validate(pb.host_status(NOW))
    assert status.phase is HostPhase.READY
    assert status.capacity.cpus == pb.HOST_CPUS
    assert status.capacity.memory.to_int() == pb.HOST_MEMORY_GIB * 2**30
    node = pb.node_body("h-1", NOW)["status"]
    assert node["allocatable"] == {"cpu": "64", "memory": "256Gi", "pods": "110"}
    assert node["conditions"][0]["type"] == "Ready" and node["conditions"][0]["status"] == "True"


def test_a_pod_requests_what_its_flavor_gives_a_vm() -> None:
    size = pb.SIZES[2]
    container = pb.pod_body("o-1", size)["spec"]["containers"][0]
    assert container["resources"]["requests"] == {"cpu": "4", "memory": "8Gi"}
    flavor = pb.flavor_body(size)["spec"]
    assert (flavor["vcpus"], flavor["memory"]) == (4, "8Gi")


def test_a_lease_renewal_carries_the_last_resource_version_and_a_micro_time() -> None:
    body = pb.lease_body("kubenova-host-h-1", "kubenova-system", "h-1", NOW, "42")
    assert body["metadata"]["resourceVersion"] == "42"
    assert body["spec"]["renewTime"] == "2026-12-01T12:00:00.123456Z"
    assert "resourceVersion" not in pb.lease_body("x", "ns", "h", NOW)["metadata"]


def test_a_lease_outlives_the_time_between_two_renewals() -> None:
    """A 100 s renewal period with a kubelet's 40 s Lease left kubenova's hosts expired 60 % of
    the time in a 10,000-host run (9,000 host phase writes, VMs marked Unknown)."""
    assert pb.lease_seconds(10) == 40
    assert pb.lease_seconds(100) == 400
    body = pb.lease_body("x", "ns", "h", NOW, None, pb.lease_seconds(100))
    assert body["spec"]["leaseDurationSeconds"] == 400


def test_the_scheduler_config_lifts_the_client_limits() -> None:
    config = pb.scheduler_config(ROOT / "k.conf", 5000, 5000)
    assert config["clientConnection"]["qps"] == 5000
    assert config["clientConnection"]["burst"] == 5000
    assert config["leaderElection"] == {"leaderElect": False}


# -- reading the API server's metrics ----------------------------------------------------------

# Real lines from kube-apiserver v1.34 (long: the format is one sample a line).
METRICS = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="binding",verb="POST",version="v1"} 900
apiserver_request_total{code="409",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="binding",verb="POST",version="v1"} 100
apiserver_request_total{code="200",component="apiserver",dry_run="",group="kubenova.io",resource="virtualmachines",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 1e+04
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 5000
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="WATCH",version="v1"} 3
apiserver_request_duration_seconds_count{resource="pods",verb="POST"} 77
"""  # noqa: E501


def test_request_totals_are_summed_over_codes_by_verb_resource_and_subresource() -> None:
    totals = pb.request_totals(METRICS)
    assert totals[pb.Request("POST", "pods", "binding")] == 1000
    assert totals[pb.Request("PATCH", "virtualmachines", "status")] == 10_000
    assert totals[pb.Request("WATCH", "pods")] == 3
    assert len(totals) == 4  # the duration histogram is not a request count


def test_writes_between_snapshots_leave_out_reads_and_the_lease_load() -> None:
    before = pb.request_totals(METRICS)
    after = before.copy()
    after[pb.Request("POST", "pods", "binding")] += 50
    after[pb.Request("PUT", "leases")] += 999
    after[pb.Request("WATCH", "pods")] += 7
    after[pb.Request("POST", "events")] += 5  # a resource first seen after the start
    writes = pb.writes_between(before, after)
    assert writes == {pb.Request("POST", "pods", "binding"): 50, pb.Request("POST", "events"): 5}
    assert str(pb.Request("POST", "pods", "binding")) == "POST pods/binding"


# APF's counters as kube-apiserver v1.34 exports them (the first three lines read from one).
FLOW_METRICS = """\
apiserver_flowcontrol_dispatched_requests_total{flow_schema="service-accounts",priority_level="workload-low"} 3
apiserver_flowcontrol_request_wait_duration_seconds_sum{execute="true",flow_schema="service-accounts",priority_level="workload-low"} 0.00018173
apiserver_flowcontrol_request_wait_duration_seconds_count{execute="true",flow_schema="service-accounts",priority_level="workload-low"} 3
apiserver_flowcontrol_dispatched_requests_total{flow_schema="exempt",priority_level="exempt"} 572
apiserver_flowcontrol_dispatched_requests_total{flow_schema="kube-scheduler",priority_level="workload-high"} 1000
apiserver_flowcontrol_dispatched_requests_total{flow_schema="kube-system-service-accounts",priority_level="workload-high"} 200
apiserver_flowcontrol_rejected_requests_total{flow_schema="kube-scheduler",priority_level="workload-high",reason="queue-full"} 40
apiserver_flowcontrol_rejected_requests_total{flow_schema="kube-scheduler",priority_level="workload-high",reason="time-out"} 10
apiserver_flowcontrol_request_wait_duration_seconds_sum{execute="true",flow_schema="kube-scheduler",priority_level="workload-high"} 2.5
apiserver_flowcontrol_request_wait_duration_seconds_count{execute="true",flow_schema="kube-scheduler",priority_level="workload-high"} 1000
apiserver_flowcontrol_nominal_limit_seats{priority_level="workload-high"} 98
"""  # noqa: E501


def test_flows_are_summed_by_priority_level_and_counted_between_snapshots() -> None:
    before = pb.flow_totals(FLOW_METRICS)
    assert before["workload-high"] == pb.Flow(1200, 50, 2.5, 1000)
    assert before["exempt"] == pb.Flow(572)
    assert set(before) == {"workload-low", "workload-high", "exempt"}  # seats are no count

    after = pb.flow_totals(FLOW_METRICS)
    after["workload-high"] = pb.Flow(3200, 150, 4.5, 3000)
    after["node-high"] = pb.Flow(10)  # a level first seen after the start
    flows = pb.flows_between(before, after)
    assert flows == {"workload-high": pb.Flow(2000, 100, 2.0, 2000), "node-high": pb.Flow(10)}
    assert pb.render_flows(flows, 1000) == (
        "workload-high 2.00, 0.10 rejected (429), queued 1.0 ms on average; node-high 0.01"
    )
    assert pb.render_flows({}, 1000) == "none"


# -- reading /proc -----------------------------------------------------------------------------


def test_cpu_seconds_are_utime_plus_stime_even_with_parens_in_the_command() -> None:
    fields = ["S", *["0"] * 10, "250", "150", *["0"] * 30]
    stat = "1234 (python3 (bench) x) " + " ".join(fields)
    assert pb.stat_cpu_seconds(stat, 100) == 4.0


def test_peak_rss_is_read_from_vmhwm() -> None:
    status = "Name:\tpython3\nVmPeak:\t 900 kB\nVmHWM:\t  524288 kB\nVmRSS:\t 1000 kB\n"
    assert pb.status_kib(status, "VmHWM") == 524288
    assert pb.status_kib(status, "VmSwap") == 0


# -- the profile summary and the table ---------------------------------------------------------


def test_top_frames_rank_by_own_samples_and_count_a_recursive_frame_once() -> None:
    collapsed = "main;loop;pop 60\nmain;loop;bind;dumps 30\nmain;f;f 10\nnot a stack line\n"
    top = pb.top_frames(collapsed, 3)
    assert top[0] == ("pop", 0.6, 0.6)
    assert top[1] == ("dumps", 0.3, 0.3)
    assert top[2][0] == "f" and math.isclose(top[2][2], 0.1)
    assert pb.top_frames("") == []


def test_the_table_has_a_column_per_side_and_a_dash_for_what_was_not_measured() -> None:
    a = pb.SideResult("kube-scheduler", 1000, 10_000, bound=10_000, all_bound_s=20.0)
    a.apiserver_cpu_s, a.apiserver_background_cpu_per_s = 30.0, 0.5
    a.writes = Counter({pb.Request("POST", "pods", "binding"): 10_000})
    b = pb.SideResult("kubenova", 1000, 10_000, bound=5000, all_bound_s=100.0)
    table = pb.render_table([a, b])
    lines = table.splitlines()
    assert lines[0] == "| 1,000 hosts, 10,000 objects | kube-scheduler | kubenova |"
    assert "| binds/s | 500 | 50 |" in lines
    assert "| kube-apiserver CPU per bind | 3.00 ms | – |" in lines
    assert "|   net of the background | 20.0 s | – |" in lines
    assert "|   net of the Lease load achieved | – | – |" in lines  # renewals not measured
    assert "| API writes per bound object | 1.00 | 0.00 |" in lines
    assert "| objects bound | 10,000 of 10,000 | 5,000 of 10,000 |" in lines


def test_the_net_counts_only_the_lease_renewals_that_got_through() -> None:
    r = pb.SideResult("kube-scheduler", 1000, 10_000, bound=10_000, all_bound_s=50.0)
    r.apiserver_cpu_s, r.apiserver_background_cpu_per_s = 50.0, 0.5
    r.background_renewals_per_s = 100.0
    r.lease_renewals_per_s = 100.0
    assert r.apiserver_net_load_cpu_s == r.apiserver_net_cpu_s == 25.0
    r.lease_renewals_per_s = 64.0  # the generator fell behind: 64 % of the background's load
    assert r.apiserver_net_cpu_s == 25.0
    assert math.isclose(r.apiserver_net_load_cpu_s, 50.0 - 0.5 * 50.0 * 0.64)
    assert math.isclose(r.apiserver_net_load_ms_per_bind, 3.4)


def test_renewals_per_second_come_from_two_stats_and_not_from_one_second() -> None:
    assert pb.renewals_per_s({"renewals": 100, "t": 10}, {"renewals": 1100, "t": 20}) == 100
    assert math.isnan(pb.renewals_per_s({}, {"renewals": 5, "t": 2}))
    assert math.isnan(pb.renewals_per_s({"renewals": 5, "t": 2}, {"renewals": 5, "t": 2}))


# -- the sides and the operator's log ----------------------------------------------------------


def test_sides_name_the_commit_each_operator_runs_from() -> None:
    assert pb.parse_sides("kube-scheduler,kubenova@abc123,kubenova", "HEAD") == [
        ("kube-scheduler", None),
        ("kubenova", "abc123"),
        ("kubenova", "HEAD"),
    ]
    assert pb.parse_sides("kubenova@worktree", "HEAD") == [("kubenova", None)]
    with pytest.raises(ValueError, match="'kube-schedular' is not kube-scheduler or kubenova"):
        pb.parse_sides("kube-schedular", "HEAD")


def test_a_side_named_twice_is_told_apart_by_its_turn() -> None:
    names = ["kube-scheduler", "kubenova@abc1234", "kubenova@abc1234", "kube-scheduler"]
    assert pb.turn_names(names) == [
        "kube-scheduler",
        "kubenova@abc1234",
        "kubenova@abc1234 #2",
        "kube-scheduler #2",
    ]
    assert pb.turn_names(["kubenova@a", "kubenova@b"]) == ["kubenova@a", "kubenova@b"]


def test_identities_name_how_each_side_logs_in_and_an_unnamed_side_is_the_admin() -> None:
    assert pb.parse_identities(pb.DEFAULT_IDENTITIES) == {
        "kube-scheduler": "admin",
        "kubenova": "deployed",
    }
    assert pb.parse_identities("kubenova=deployed,") == {
        "kube-scheduler": "admin",
        "kubenova": "deployed",
    }
    assert pb.parse_identities("") == {"kube-scheduler": "admin", "kubenova": "admin"}
    for bad in ("kubenova", "kubenova=root", "kube-schedular=admin"):
        with pytest.raises(ValueError, match=re.escape(f"{bad!r} is not kube-scheduler|kubenova")):
            pb.parse_identities(bad)


def test_the_log_summary_counts_warnings_and_errors_by_message() -> None:
    log = "\n".join(
        [
            '{"level": "info", "msg": "bound bench/o-1 to h-2"}',
            '{"level": "warning", "msg": "lease renewal failed: "}',
            '{"level": "warning", "msg": "lease renewal failed: "}',
            '{"level": "error", "msg": "binding bench/o-3 failed"}',
            "Traceback (most recent call last):",
            "[1, 2]",
        ]
    )
    assert pb.log_summary(log) == {
        "warning: lease renewal failed: ": 2,
        "error: binding bench/o-3 failed": 1,
    }


def test_the_last_write_time_is_the_latest_managed_fields_stamp() -> None:
    obj = {
        "metadata": {
            "managedFields": [
                {"manager": "bench", "time": "2026-12-01T12:00:00Z"},
                {"manager": "kube-scheduler", "time": "2026-12-01T12:00:07Z"},
            ]
        }
    }
    assert pb.last_write_time(obj) == NOW.replace(second=7, microsecond=0).timestamp()
    assert pb.last_write_time({"metadata": {}}) is None


def test_a_pods_binding_time_is_its_scheduled_condition() -> None:
    pod = {
        "metadata": {"managedFields": [{"manager": "bench", "time": "2026-12-01T12:00:00Z"}]},
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": "2026-12-01T12:02:03Z",
                }
            ]
        },
    }
    assert pb.last_write_time(pod) == NOW.replace(minute=2, second=3, microsecond=0).timestamp()


def test_a_vm_without_managed_fields_is_timed_by_its_latest_history_entry() -> None:
    vm = {
        "metadata": {"name": "o-1"},
        "status": {
            "host": "h-1",
            "history": [
                {"action": "Created", "time": "2026-12-01T12:00:00Z"},
                {"action": "Scheduled", "time": "2026-12-01T12:00:09.250000Z"},
            ],
        },
    }
    assert pb.last_write_time(vm) == NOW.replace(second=9, microsecond=250000).timestamp()
    assert pb.last_write_time({"status": {"history": [{"time": "not a time"}]}}) is None

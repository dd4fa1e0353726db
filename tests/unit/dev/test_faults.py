"""Which request a fault rule hits: classification of API paths, targets, probability and
counts, the rule syntax and its errors."""

from __future__ import annotations

import pytest

from kubenova.dev import faults
from kubenova.dev.faults import Fault, FaultPlan, Request, Rule, classify, parse_rule

pytestmark = pytest.mark.unit

VMS = "/apis/kubenova.io/v1alpha1/namespaces/ns/virtualmachines"


def req(method: str, path: str, component: str = "operator", **query: str) -> Request:
    return Request(component, method, path, query, "kubenova-operator/1 python")


class TestClassify:
    @pytest.mark.parametrize(
        ("method", "path", "query", "verb", "resource"),
        [
            ("GET", VMS, {}, "list", "virtualmachines"),
            ("GET", VMS, {"watch": "true"}, "watch", "virtualmachines"),
            ("GET", VMS, {"watch": "1"}, "watch", "virtualmachines"),
            ("GET", f"{VMS}/web-1", {}, "get", "virtualmachines"),
            ("POST", VMS, {}, "create", "virtualmachines"),
            ("PUT", f"{VMS}/web-1", {}, "update", "virtualmachines"),
            ("PATCH", f"{VMS}/web-1/status", {}, "patch", "virtualmachines/status"),
            ("DELETE", f"{VMS}/web-1", {}, "delete", "virtualmachines"),
            ("DELETE", VMS, {}, "deletecollection", "virtualmachines"),
            ("GET", "/apis/kubenova.io/v1alpha1/hosts", {}, "list", "hosts"),
            ("PATCH", "/apis/kubenova.io/v1alpha1/hosts/h1/status", {}, "patch", "hosts/status"),
            ("PUT", "/apis/coordination.k8s.io/v1/namespaces/s/leases/l", {}, "update", "leases"),
            ("GET", "/api/v1/namespaces", {}, "list", "namespaces"),
            ("GET", "/api/v1/namespaces/kube-system", {}, "get", "namespaces"),
            ("POST", "/api/v1/namespaces/ns/events", {}, "create", "events"),
            ("GET", "/version", {}, "get", ""),
            ("GET", "/apis", {}, "get", ""),
        ],
    )
    def test_verb_and_resource(
        self, method: str, path: str, query: dict[str, str], verb: str, resource: str
    ) -> None:
        info = classify(method, path, query)
        assert (info.verb, info.resource) == (verb, resource)

    def test_namespace_name_and_group(self) -> None:
        info = classify("PATCH", f"{VMS}/web-1/status")
        assert (info.namespace, info.name, info.group) == ("ns", "web-1", "kubenova.io")


class TestRuleTargets:
    def test_an_empty_rule_matches_everything(self) -> None:
        rule = Rule(Fault.UNAVAILABLE)
        assert rule.matches(req("GET", VMS)) and rule.matches(req("POST", "/api/v1/x"))

    def test_verb_resource_and_component_must_all_match(self) -> None:
        rule = Rule(
            Fault.DROP_REPLY,
            verbs=frozenset({"patch"}),
            resources=frozenset({"virtualmachines/status"}),
            components=frozenset({"operator"}),
        )
        assert rule.matches(req("PATCH", f"{VMS}/a/status"))
        assert not rule.matches(req("PATCH", f"{VMS}/a"))  # the main resource, not status
        assert not rule.matches(req("PUT", f"{VMS}/a/status"))
        assert not rule.matches(req("PATCH", f"{VMS}/a/status", component="agents"))

    def test_a_namespace_target_takes_only_that_namespace(self) -> None:
        """What lets a test aim at its own objects on a control plane other tests share."""
        rule = Rule(Fault.DROP_REPLY, namespaces=frozenset({"ns"}))
        assert rule.matches(req("PATCH", f"{VMS}/a/status"))
        assert not rule.matches(req("PATCH", VMS.replace("/ns/", "/other/") + "/a/status"))
        assert not rule.matches(req("GET", "/apis/kubenova.io/v1alpha1/virtualmachines"))

    def test_a_name_target_takes_only_that_object(self) -> None:
        """A cluster-scoped object (a Host, a pool) has no namespace to aim at."""
        hosts = "/apis/kubenova.io/v1alpha1/hosts"
        rule = Rule(Fault.UNAVAILABLE, names=frozenset({"h1"}))
        assert rule.matches(req("PATCH", f"{hosts}/h1/status"))
        assert not rule.matches(req("PATCH", f"{hosts}/h2/status"))
        assert not rule.matches(req("GET", hosts))  # the collection names no object

    def test_a_resource_wildcard_takes_its_subresources(self) -> None:
        rule = Rule(Fault.CONFLICT, resources=frozenset({"virtualmachines/*"}))
        assert rule.matches(req("PATCH", f"{VMS}/a/status"))
        assert rule.matches(req("PATCH", f"{VMS}/a"))
        assert not rule.matches(req("PATCH", "/apis/kubenova.io/v1alpha1/hosts/h"))

    def test_user_agent_substring(self) -> None:
        rule = Rule(Fault.THROTTLE, user_agent="kopf")
        assert not rule.matches(req("GET", VMS))
        assert rule.matches(Request("x", "GET", VMS, {}, "kopf/1.38"))


class TestPlan:
    def test_first_matching_rule_decides_and_is_counted(self) -> None:
        plan = FaultPlan(
            [Rule(Fault.CONFLICT, verbs=frozenset({"patch"})), Rule(Fault.UNAVAILABLE)]
        )
        a = plan.decide(req("PATCH", f"{VMS}/a"))
        b = plan.decide(req("GET", VMS))
        assert a is not None and a.fault is Fault.CONFLICT
        assert b is not None and b.fault is Fault.UNAVAILABLE
        counts = plan.counts()
        assert counts["409"] == 1 and counts["503"] == 1 and counts["requests"] == 2
        assert counts["drop-reply"] == 0  # every kind is listed

    def test_after_skips_and_times_caps(self) -> None:
        plan = FaultPlan([Rule(Fault.DROP_REPLY, after=2, times=1)])
        decided = [plan.decide(req("POST", VMS)) for _ in range(5)]
        assert [d is not None for d in decided] == [False, False, True, False, False]
        assert plan.fired(0) == 1 and plan.seen(0) == 5

    def test_no_match_no_fault(self) -> None:
        plan = FaultPlan([Rule(Fault.REFUSE, components=frozenset({"agents"}))])
        assert plan.decide(req("GET", VMS)) is None
        assert plan.counts()["refuse"] == 0

    def test_the_same_seed_injects_the_same_faults(self) -> None:
        def run(seed: int) -> list[str | None]:
            plan = FaultPlan(faults.chaos_mix(0.2), seed=seed)
            out = []
            for i in range(300):
                method = ("GET", "PATCH", "POST", "PUT")[i % 4]
                d = plan.decide(req(method, f"{VMS}/vm-{i}"))
                out.append(None if d is None else f"{d.fault.value}:{d.delay:.3f}")
            return out

        assert run(3) == run(3)
        assert run(3) != run(4)

    def test_probability_is_roughly_honoured(self) -> None:
        plan = FaultPlan([Rule(Fault.INTERNAL_ERROR, p=0.1)], seed=1)
        hits = sum(plan.decide(req("GET", VMS)) is not None for _ in range(5000))
        assert 400 < hits < 600

    def test_jitter_stays_within_half_to_one_and_a_half_the_delay(self) -> None:
        plan = FaultPlan([Rule(Fault.LATENCY, delay=2.0, jitter=True)], seed=5)
        delays = [d.delay for d in (plan.decide(req("GET", VMS)) for _ in range(200)) if d]
        assert len(delays) == 200 and min(delays) >= 1.0 and max(delays) <= 3.0
        assert len(set(delays)) > 100

    def test_replacing_rules_keeps_the_counts(self) -> None:
        plan = FaultPlan([Rule(Fault.THROTTLE)])
        plan.decide(req("GET", VMS))
        plan.replace_rules([])
        assert plan.decide(req("GET", VMS)) is None
        assert plan.counts()["429"] == 1

    def test_the_chaos_mix_never_answers_409_to_a_read_or_create(self) -> None:
        plan = FaultPlan(faults.chaos_mix(1.0), seed=2)
        for _ in range(300):
            for method in ("GET", "POST"):
                d = plan.decide(req(method, VMS))
                assert d is None or d.fault is not Fault.CONFLICT


class TestStatusFaults:
    def test_status_faults_say_their_code_and_others_none(self) -> None:
        assert [f.status for f in Fault if f.status] == [409, 429, 500, 503]
        assert Fault.DROP_REPLY.status is None


class TestParse:
    def test_a_full_rule(self) -> None:
        rule = parse_rule(
            "drop-reply:verb=patch|update,resource=virtualmachines/status,component=operator,"
            "namespace=a|b,name=x,times=1,after=2,p=0.5,delay=3,jitter=true,agent=kopf"
        )
        assert rule == Rule(
            Fault.DROP_REPLY,
            verbs=frozenset({"patch", "update"}),
            resources=frozenset({"virtualmachines/status"}),
            components=frozenset({"operator"}),
            namespaces=frozenset({"a", "b"}),
            names=frozenset({"x"}),
            user_agent="kopf",
            p=0.5,
            after=2,
            times=1,
            delay=3.0,
            jitter=True,
        )

    def test_a_bare_fault(self) -> None:
        assert parse_rule("503") == Rule(Fault.UNAVAILABLE)

    @pytest.mark.parametrize(
        ("text", "says"),
        [
            ("explode", "unknown fault 'explode'; use one of drop-reply, 409"),
            ("503:verb=poke", "unknown verb poke; use create"),
            ("503:p=2", "p=2.0 is not a probability"),
            ("503:p=often", "p='often' is not a number"),
            ("503:colour=red", "unknown key 'colour'"),
            ("503:verb", "'verb' is not key=value"),
            ("timeout:delay=-1", "cannot be negative"),
        ],
    )
    def test_bad_rules_are_refused_with_the_part_named(self, text: str, says: str) -> None:
        with pytest.raises(faults.RuleError, match=None) as e:
            parse_rule(text)
        assert says in str(e.value)

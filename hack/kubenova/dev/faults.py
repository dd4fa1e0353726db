"""Which API fault to inject into which request: request classification (verb and resource
from an API path, as kube-apiserver's RequestInfo does), rules that target a verb, a resource
and a component, and a seeded plan that decides, request by request, and counts what it
decided. Pure: no sockets, no clock; `kubenova.dev.faultproxy` does the I/O.

A rule is written `FAULT[:key=value,...]`, e.g.

    drop-reply:verb=patch,resource=virtualmachines/status,component=operator,times=1
    503:verb=get|list,p=0.05
    latency:verb=watch,resource=virtualmachines,delay=2
"""

from __future__ import annotations

import enum
import random
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


class Fault(enum.Enum):
    DROP_REPLY = "drop-reply"
    """Forward the request, let it land, then reset the connection instead of answering: the
    client cannot tell whether its write happened (the uncertain outcome)."""
    CONFLICT = "409"
    THROTTLE = "429"
    INTERNAL_ERROR = "500"
    UNAVAILABLE = "503"
    """Answer with this status before forwarding: nothing reached the API server."""
    TIMEOUT = "timeout"
    """Hold the request `delay` seconds, never forward it, then reset the connection."""
    LATENCY = "latency"
    """Forward after `delay` seconds; on a watch, deliver every event `delay` seconds late (a
    lagging informer)."""
    CUT_WATCH = "cut-watch"
    """Forward, then reset the connection `delay` seconds into the answer (a watch cut
    mid-stream)."""
    REFUSE = "refuse"
    """Reset this connection unanswered and refuse new connections for `delay` seconds."""

    @property
    def status(self) -> int | None:
        """The HTTP status answered in place of the API server, for the status faults."""
        return int(self.value) if self.value.isdigit() else None


VERBS = frozenset(
    {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
)
WRITES = frozenset({"create", "update", "patch", "delete", "deletecollection"})


class RuleError(ValueError):
    """A rule that cannot be parsed; the message names the rule and the part at fault."""


@dataclass(frozen=True)
class Request:
    """What a rule can see of one request."""

    component: str
    """The listener it came in on (one per component), or the client's name."""
    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    user_agent: str = ""

    @property
    def info(self) -> RequestInfo:
        return classify(self.method, self.path, self.query)


@dataclass(frozen=True)
class RequestInfo:
    verb: str
    resource: str
    """`virtualmachines`, `virtualmachines/status`, `leases`; "" for non-resource paths."""
    namespace: str = ""
    name: str = ""
    group: str = ""

    @property
    def watch(self) -> bool:
        return self.verb == "watch"


def classify(method: str, path: str, query: Mapping[str, str] | None = None) -> RequestInfo:
    """The verb and resource of an API request, from its method, path and query."""
    query = query or {}
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    group = ""
    if parts[:1] == ["api"] and len(parts) >= 2:
        rest = parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return RequestInfo(verb=method.lower(), resource="")
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return RequestInfo(verb=method.lower(), resource="", group=group)
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    m = method.upper()
    if m == "GET":
        if query.get("watch", "").lower() in ("1", "true"):
            verb = "watch"
        else:
            verb = "get" if name else "list"
    elif m == "POST":
        verb = "create"
    elif m == "PUT":
        verb = "update"
    elif m == "PATCH":
        verb = "patch"
    elif m == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = m.lower()
    return RequestInfo(verb, resource, namespace, name, group)


@dataclass(frozen=True)
class Rule:
    """Inject `fault` into requests that match every given target (an empty target matches
    all), with probability `p`, skipping the first `after` matches and at most `times` times."""

    fault: Fault
    verbs: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()
    """Exact names; `virtualmachines` does not match `virtualmachines/status`, and
    `virtualmachines/*` matches both the resource and its subresources."""
    components: frozenset[str] = frozenset()
    namespaces: frozenset[str] = frozenset()
    """Of namespaced requests; a cluster-wide list or watch (no namespace in its path) matches
    no namespace target."""
    names: frozenset[str] = frozenset()
    """Of the object a request is about (a Host's status write names the Host); a list or
    watch of a collection matches no name target."""
    user_agent: str = ""
    """A substring of the client's User-Agent."""
    p: float = 1.0
    after: int = 0
    times: int | None = None
    delay: float = 1.0
    """Seconds: of latency, before a timeout resets, into an answer before the cut, of refusal."""
    jitter: bool = False
    """Draw each delay uniformly from [delay/2, 3*delay/2] (seeded)."""

    def __post_init__(self) -> None:
        unknown = self.verbs - VERBS
        if unknown:
            raise RuleError(
                f"rule {self.fault.value}: unknown verb {', '.join(sorted(unknown))}; "
                f"use {', '.join(sorted(VERBS))}"
            )
        if not 0.0 <= self.p <= 1.0:
            raise RuleError(f"rule {self.fault.value}: p={self.p} is not a probability in [0, 1]")
        if self.delay < 0 or self.after < 0 or (self.times is not None and self.times < 0):
            raise RuleError(f"rule {self.fault.value}: delay, after and times cannot be negative")

    def matches(self, request: Request, info: RequestInfo | None = None) -> bool:
        info = info or request.info
        if self.verbs and info.verb not in self.verbs:
            return False
        if self.resources and not any(_resource_matches(r, info.resource) for r in self.resources):
            return False
        if self.components and request.component not in self.components:
            return False
        if self.namespaces and info.namespace not in self.namespaces:
            return False
        if self.names and info.name not in self.names:
            return False
        return not self.user_agent or self.user_agent in request.user_agent


def _resource_matches(pattern: str, resource: str) -> bool:
    if pattern.endswith("/*"):
        base = pattern[:-2]
        return resource == base or resource.startswith(base + "/")
    return pattern == resource


def parse_rule(text: str) -> Rule:
    """`FAULT[:key=value,...]` with keys verb, resource, component, namespace, name (values
    joined by `|`), agent, p, after, times, delay, jitter."""
    head, _, tail = text.strip().partition(":")
    try:
        fault = Fault(head)
    except ValueError:
        kinds = ", ".join(f.value for f in Fault)
        raise RuleError(f"rule {text!r}: unknown fault {head!r}; use one of {kinds}") from None
    kwargs: dict[str, object] = {}
    for part in filter(None, (s.strip() for s in tail.split(","))):
        key, eq, value = part.partition("=")
        if not eq:
            raise RuleError(f"rule {text!r}: {part!r} is not key=value")
        try:
            if key in ("verb", "resource", "component", "namespace", "name"):
                kwargs[f"{key}s"] = frozenset(v for v in value.split("|") if v)
            elif key == "agent":
                kwargs["user_agent"] = value
            elif key in ("p", "delay"):
                kwargs[key] = float(value)
            elif key in ("after", "times"):
                kwargs[key] = int(value)
            elif key == "jitter":
                kwargs["jitter"] = value.lower() in ("1", "true", "yes")
            else:
                raise RuleError(
                    f"rule {text!r}: unknown key {key!r}; use verb, resource, component, "
                    "namespace, name, agent, p, after, times, delay or jitter"
                )
        except ValueError as e:
            if isinstance(e, RuleError):
                raise
            raise RuleError(f"rule {text!r}: {key}={value!r} is not a number") from None
    return Rule(fault, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Decision:
    fault: Fault
    delay: float
    rule: int
    """Index of the rule that fired."""


class FaultPlan:
    """Rules in order; the first one that matches and fires decides. Seeded, so a run with
    the same requests in the same order injects the same faults. Safe to read `counts()` from
    another thread."""

    def __init__(self, rules: Iterable[Rule] = (), seed: int = 0) -> None:
        self.rules: list[Rule] = list(rules)
        self._rng = random.Random(seed)
        self._seen: Counter[int] = Counter()
        self._fired: Counter[int] = Counter()
        self._counts: Counter[Fault] = Counter()
        self._requests = 0
        self._lock = threading.Lock()

    def decide(self, request: Request) -> Decision | None:
        info = request.info
        with self._lock:
            self._requests += 1
            for i, rule in enumerate(self.rules):
                if not rule.matches(request, info):
                    continue
                self._seen[i] += 1
                if self._seen[i] <= rule.after:
                    continue
                if rule.times is not None and self._fired[i] >= rule.times:
                    continue
                if rule.p < 1.0 and self._rng.random() >= rule.p:
                    continue
                self._fired[i] += 1
                self._counts[rule.fault] += 1
                delay = rule.delay
                if rule.jitter:
                    delay *= 0.5 + self._rng.random()
                return Decision(rule.fault, delay, i)
        return None

    def replace_rules(self, rules: Sequence[Rule]) -> None:
        """New rules from now on (counts of faults already injected are kept)."""
        with self._lock:
            self.rules = list(rules)
            self._seen.clear()
            self._fired.clear()

    def counts(self) -> dict[str, int]:
        """Faults injected per kind, every kind listed; `requests` is all requests seen."""
        with self._lock:
            out = {f.value: self._counts[f] for f in Fault}
            out["requests"] = self._requests
            return out

    def fired(self, rule: int) -> int:
        """How often rule number `rule` injected its fault."""
        with self._lock:
            return self._fired[rule]

    def seen(self, rule: int) -> int:
        """How many requests rule number `rule` matched (fired or not, counted until an
        earlier rule fires first)."""
        with self._lock:
            return self._seen[rule]


def chaos_mix(rate: float = 0.02, watch_cut_after: float = 20.0) -> list[Rule]:
    """A random mix of every fault for chaos runs: each request has about `rate` chance of a
    fault. Conflicts only where a real server answers them (writes with a precondition are
    updates and patches); a cut of about half the watch streams, `watch_cut_after` seconds in."""
    writes = frozenset({"update", "patch", "delete", "create"})
    reads = frozenset({"get", "list"})
    cut = watch_cut_after
    return [
        Rule(Fault.DROP_REPLY, verbs=writes, p=rate),
        Rule(Fault.CONFLICT, verbs=frozenset({"update", "patch"}), p=rate / 4),
        Rule(Fault.THROTTLE, verbs=writes | reads, p=rate / 4),
        Rule(Fault.INTERNAL_ERROR, verbs=writes | reads, p=rate / 4),
        Rule(Fault.UNAVAILABLE, verbs=writes | reads, p=rate / 4),
        Rule(Fault.TIMEOUT, verbs=writes | reads, p=rate / 4, delay=1.0, jitter=True),
        Rule(Fault.LATENCY, verbs=writes | reads, p=min(1.0, rate * 2), delay=0.3, jitter=True),
        Rule(Fault.LATENCY, verbs=frozenset({"watch"}), p=0.1, delay=0.5, jitter=True),
        Rule(Fault.CUT_WATCH, verbs=frozenset({"watch"}), p=0.5, delay=cut, jitter=True),
        Rule(Fault.REFUSE, verbs=writes | reads, p=rate / 20, delay=1.0, jitter=True),
    ]

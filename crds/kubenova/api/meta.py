"""Building blocks shared by every kind: the base model, object metadata, conditions, label
selectors and the description a kind gives of its CRD. Pure."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict


def cel(rule: str, message: str) -> JsonDict:
    """A CEL validation rule for the CRD schema (`x-kubernetes-validations`), to pass as a
    field's or a model's `json_schema_extra`."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message}]}


class Model(BaseModel):
    """Base of every API type: camelCase on the wire, unknown fields rejected, attribute
    docstrings become the field descriptions that `kubectl explain` shows."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_assignment=True,
    )

    def to_dict(self) -> dict[str, Any]:
        """The wire form: camelCase keys, no unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ObjectMeta(BaseModel):
    """Standard object metadata; only the fields kubenova reads are typed."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    resource_version: str | None = None
    uid: str | None = None
    finalizers: list[str] = Field(default_factory=list)
    deletion_timestamp: dt.datetime | None = None


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """One aspect of the object's state, in the Kubernetes style."""

    type: str = Field(min_length=1, max_length=64)
    """What this condition is about, e.g. Ready or Scheduled."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = Field(default="", max_length=128)
    """A CamelCase word for the cause of the last transition."""
    message: str = Field(default="", max_length=4096)
    """A sentence for people: what happened and what to do about it."""
    last_transition_time: dt.datetime | None = None
    """When status last changed."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation this condition was computed from."""


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


_VALUES_RULE = cel(
    "self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0"
    " : !has(self.values) || size(self.values) == 0",
    "values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist",
)


class LabelSelectorRequirement(Model):
    """A requirement on one label of a host."""

    model_config = ConfigDict(json_schema_extra=_VALUES_RULE)

    key: str = Field(min_length=1, max_length=317)
    """The label key."""
    operator: SelectorOperator
    """In, NotIn, Exists or DoesNotExist."""
    values: list[str] = Field(default_factory=list, max_length=64)
    """The values for In and NotIn; empty for Exists and DoesNotExist."""


class LabelSelector(Model):
    """Selects hosts by their labels; all terms must hold (an empty selector selects all)."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    """Labels that must have exactly these values."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=32)
    """Set-based requirements, all of which must hold."""


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"] = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class CRDInfo:
    """How a kind is served: the facts of its CustomResourceDefinition beyond its schema."""

    plural: str
    short_names: tuple[str, ...]
    scope: Literal["Namespaced", "Cluster"]
    printer_columns: tuple[PrinterColumn, ...] = field(default=())
    selectable_fields: tuple[str, ...] = field(default=())
    """JSON paths a field selector may name (`kubectl get --field-selector status.host=h1`),
    served by the API server beside metadata.name and metadata.namespace."""


class Resource(Model):
    """A whole object of one of kubenova's kinds."""

    crd: ClassVar[CRDInfo]

    api_version: Literal["kubenova.io/v1alpha1"] = "kubenova.io/v1alpha1"
    """The group and version: kubenova.io/v1alpha1."""
    kind: str
    metadata: ObjectMeta

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> Self:
        """Validate a raw object, raising `InvalidObjectError` with a message per bad field."""
        try:
            return cls.model_validate(obj)
        except ValidationError as e:
            raise InvalidObjectError.from_validation(cls.__name__, obj, e) from None


class InvalidObjectError(ValueError):
    """An object that does not match its kind's schema; the message names every bad field."""

    def __init__(self, kind: str, name: str, problems: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.problems = problems
        super().__init__(f"{kind} {name}: " + "; ".join(problems))

    @classmethod
    def from_validation(
        cls, kind: str, obj: dict[str, Any], e: ValidationError
    ) -> InvalidObjectError:
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        name = "/".join(str(p) for p in (meta.get("namespace"), meta.get("name", "?")) if p)
        problems = []
        for err in e.errors(include_url=False):
            path = ".".join(str(p) for p in err["loc"]) or "(object)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown field; check its spelling against `kubectl explain`"
            elif err["type"] == "missing":
                msg = "required field is missing"
            problems.append(f"{path}: {msg}")
        return cls(kind, name, problems)


def set_condition(
    conditions: list[Condition],
    new: Condition,
    now: dt.datetime,
) -> list[Condition]:
    """Return `conditions` with `new` in place of its type; lastTransitionTime moves only when
    the status changes, as Kubernetes' meta.SetStatusCondition does."""
    out: list[Condition] = []
    found = False
    for c in conditions:
        if c.type != new.type:
            out.append(c)
            continue
        found = True
        changed = c.status != new.status
        moment = now if changed or c.last_transition_time is None else c.last_transition_time
        out.append(new.model_copy(update={"last_transition_time": moment}))
    if not found:
        out.append(new.model_copy(update={"last_transition_time": now}))
    return out

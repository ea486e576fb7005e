"""Building blocks shared by the three kinds: the model base class, constrained string types
(quantity, duration, names), CEL-rule helpers, metav1.Condition, label selectors and the
top-level object shape.

Kubernetes-specific schema (CEL rules, list types, server-side defaults) is declared here on the
models through `json_schema_extra`; `crdgen` only translates, so the models stay the one source.
No I/O and no kopf: the node agent imports this package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel

from kubetune import constants
from kubetune.constants import KindNames


class KubeModel(BaseModel):
    """Base of every API model: frozen, camelCase on the wire, snake_case in Python.

    Unknown fields are ignored rather than refused: the API server already prunes and refuses them
    for users, and an older agent must still read a NodeTuning written by a newer operator.
    Field descriptions are the attribute docstrings; they become `kubectl explain` text.
    """

    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="ignore",
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        # The API server prunes `field: null` (no field is nullable) and then defaults it, so
        # `mode: null` (or a bare `mode:` in YAML) is stored as Recommend: the model reads a known
        # field's null as absent, as the server does. Lists become tuples: with a validator before
        # it, strict validation of JSON sees Python data, where tuple fields take only tuples.
        if not isinstance(data, dict):
            return data
        fields = {f.alias or n for n, f in cls.model_fields.items()}
        return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
                if v is not None or k not in fields}

    def to_dict(self) -> dict[str, Any]:
        """The wire form: camelCase keys, JSON types, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- CEL and other schema extensions ---------------------------------------------------------------


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry; `field_path` points the error at a child field."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules, for a model's config or a field."""
    return {"x-kubernetes-validations": list(rules)}


@dataclass(frozen=True)
class LessThan:
    """The rule `low < high` between two fields of one model, for both the API server (`rule`, a CEL
    entry) and pydantic (`validator`, to assign in the model's class body)."""

    low: str
    high: str

    @property
    def message(self) -> str:
        return f"{to_camel(self.low)} must be less than {to_camel(self.high)}"

    @property
    def rule(self) -> dict[str, str]:
        return cel(f"self.{to_camel(self.low)} < self.{to_camel(self.high)}", self.message)

    @property
    def validator(self) -> Any:
        def check(model: Any) -> Any:
            if getattr(model, self.low) >= getattr(model, self.high):
                raise ValueError(self.message)
            return model

        return model_validator(mode="after")(check)


def list_map(*keys: str) -> dict[str, Any]:
    """A list whose items are identified by `keys`: the API server refuses duplicates and
    server-side apply merges items by key instead of replacing the whole list."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


LIST_SET: dict[str, Any] = {"x-kubernetes-list-type": "set"}


def _unique_items(items: tuple[Any, ...]) -> tuple[Any, ...]:
    duplicates = sorted({str(getattr(i, "value", i)) for i in items if items.count(i) > 1})
    if duplicates:
        raise ValueError(f"duplicate values: {', '.join(duplicates)}")
    return items


UNIQUE_ITEMS = AfterValidator(_unique_items)
"""Refuse a list with the same value twice, as the API server does for a `LIST_SET` list."""


def unique_by(key: str) -> Any:
    """Refuse a list with two items sharing `key` (the API server does the same for list maps)."""

    def check(items: tuple[Any, ...]) -> tuple[Any, ...]:
        seen = [getattr(item, key) for item in items]
        duplicates = sorted({k for k in seen if seen.count(k) > 1})
        if duplicates:
            raise ValueError(f"duplicate {key}: {', '.join(duplicates)}")
        return items

    return AfterValidator(check)

def defaulted_section(model: type[KubeModel]) -> Any:
    """A field holding `model` with every default filled in, both in Python (default_factory) and by
    the API server (the schema default is the whole default object: the server checks a default
    against the CEL rules before nested defaults are applied, so `{}` would not do)."""
    return Field(default_factory=model, json_schema_extra={"default": model().to_dict()})


def _is_empty(value: Any) -> bool:
    return not value


def optional_list(max_items: int, **schema: Any) -> Any:
    """A list that may be absent: empty in Python, left out of the wire form when empty (absent and
    `[]` mean the same, and the API server stores no default for it). `schema` adds e.g. list types."""
    return Field(default=(), max_length=max_items, exclude_if=_is_empty, json_schema_extra=schema or None)


# --- constrained strings and numbers ---------------------------------------------------------------

# Kubernetes' resource.Quantity grammar without the sign: bounds and sizes are never negative.
# The exponent is a whole number: Kubernetes' pattern allows `1e1.5`, but its parser (and CEL's
# quantity()) refuses it.
QUANTITY_PATTERN = r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]+))?$"


def _quantity_text(value: object) -> object:
    """An integer quantity (`cpu: 2`, as Kubernetes' ResourceList takes it) becomes its string, so
    code downstream sees one canonical type; fractions must be strings (`"0.5"` or `500m`)."""
    if isinstance(value, bool):
        raise ValueError("a quantity is a number or a string such as 250m, 2, 512Mi")
    if isinstance(value, int):
        # The API server reads a JSON integer beyond int64 as a float, which an int-or-string refuses.
        if value > 2**63 - 1:
            raise ValueError(f"{value} is too large for an integer: write it as a string with a unit (e.g. \"8Ei\")")
        return str(value)
    if isinstance(value, float):
        raise ValueError(f"{value} is a fraction: write it as a string (e.g. \"{value}\" or \"{round(value * 1000)}m\")")
    return value


# On the wire an int-or-string, exactly like Kubernetes' resource.Quantity in CRDs (controller-gen's
# schema): the pattern applies to strings; integers are whole amounts. The minimum refuses negatives.
QUANTITY_SCHEMA = {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True,
                   "pattern": QUANTITY_PATTERN, "maxLength": 64, "minimum": 0}
Quantity = Annotated[str, BeforeValidator(_quantity_text), Field(pattern=QUANTITY_PATTERN, max_length=64),
                     WithJsonSchema(QUANTITY_SCHEMA)]
"""A non-negative Kubernetes quantity: a string such as `250m`, `2`, `512Mi`, `1.5G`, or an integer
such as `2` (read as the string `"2"`)."""

# Go duration subset: whole numbers with units h, m, s, ms; no sign, no spaces, no bare numbers.
DURATION_PATTERN = r"^([0-9]+(h|ms|m|s))+$"
_DURATION_PART = re.compile(r"([0-9]+)(h|ms|m|s)")
_DURATION_UNITS = {"h": timedelta(hours=1), "m": timedelta(minutes=1), "s": timedelta(seconds=1),
                   "ms": timedelta(milliseconds=1)}
_DURATION_NANOSECONDS = {"h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6}
# Go's time.Duration, and so CEL's duration() and every Kubernetes duration, ends at 2^63-1 ns.
MAX_DURATION_NANOSECONDS = 2**63 - 1
_IN_GO_RANGE = "must be at most 2562047h (the longest duration Kubernetes accepts)"


def _go_duration(value: str) -> str:
    parse_duration(value)
    return value


Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32,
                                json_schema_extra=validations(cel("duration(self) >= duration('0s')", _IN_GO_RANGE))),
                     AfterValidator(_go_duration)]
"""A duration such as `30s`, `5m`, `1h30m`, `500ms`, at most 2562047h."""


# Days, weeks and years are Prometheus' units, not Kubernetes' (Go's, and CEL's `duration()`): one
# grammar everywhere (CRD, chart, CLI) means refusing them, with the hour count to write instead.
_LONG_UNITS = re.compile(r"^([0-9]+(y|w|d|h|ms|m|s))+$")
_LONG_HOURS = {"y": 365 * 24, "w": 7 * 24, "d": 24}


def parse_duration(text: str) -> timedelta:
    """`1h30m` -> timedelta(minutes=90). Raises ValueError for anything `Duration` refuses."""
    if not isinstance(text, str) or not re.fullmatch(DURATION_PATTERN, text):
        hint = ""
        if isinstance(text, str) and _LONG_UNITS.fullmatch(text):
            parts = re.findall(r"([0-9]+)(y|w|d|h|ms|m|s)", text)
            hours = sum(int(n) * _LONG_HOURS[u] for n, u in parts if u in _LONG_HOURS)
            rest = "".join(n + u for n, u in parts if u not in _LONG_HOURS and u != "h")
            hours += sum(int(n) for n, u in parts if u == "h")
            hint = f" (days, weeks and years are not units here: write {hours}h{rest})"
        raise ValueError(f"invalid duration {text!r}: use whole numbers with h, m, s or ms, "
                         f"e.g. 30s, 5m, 1h30m, 168h{hint}")
    parts = _DURATION_PART.findall(text)
    if sum(int(n) * _DURATION_NANOSECONDS[unit] for n, unit in parts) > MAX_DURATION_NANOSECONDS:
        raise ValueError(f"invalid duration {text!r}: {_IN_GO_RANGE}")
    return sum((int(n) * _DURATION_UNITS[unit] for n, unit in parts), timedelta())


def duration_at_least(minimum: str) -> Any:
    """A `Duration` no shorter than `minimum`, checked by pydantic and by the API server (CEL)."""
    floor = parse_duration(minimum)
    message = f"must be at least {minimum}"

    def check(value: str) -> str:
        if parse_duration(value) < floor:
            raise ValueError(message)
        return value

    return Annotated[
        str,
        Field(pattern=DURATION_PATTERN, max_length=32,
              json_schema_extra=validations(cel(f"duration(self) >= duration('{minimum}')", message))),
        AfterValidator(check),
    ]


_QUANTITY_SUFFIX = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}
_QUANTITY_PARTS = re.compile(r"^([0-9.]+)([eE][-+]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")


def parse_quantity(text: str) -> Decimal:
    """`250m` -> Decimal('0.250'), `1Gi` -> Decimal(1073741824). Raises ValueError for a bad quantity."""
    if not isinstance(text, str) or not re.fullmatch(QUANTITY_PATTERN, text):
        raise ValueError(f"invalid quantity {text!r}: use e.g. 250m, 2, 512Mi, 1G")
    number, suffix = _QUANTITY_PARTS.fullmatch(text).groups()  # type: ignore[union-attr]
    if suffix and suffix not in _QUANTITY_SUFFIX:  # an exponent; a bare `E` is exa
        return Decimal(number) * Decimal(10) ** Decimal(suffix[1:])
    return Decimal(number) * _QUANTITY_SUFFIX[suffix or ""]


Percent = Annotated[float, Field(ge=0, le=100)]
"""A percentage, 0 to 100."""

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ObjectName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=253)]
"""A Kubernetes object name (DNS subdomain)."""

# A block device as named under /sys/block: no slash, no "..", no leading dot, so a name can
# never point outside /sys/block/<name>.
DEVICE_NAME_PATTERN = r"^[a-zA-Z0-9]+([_.-][a-zA-Z0-9]+)*$"
DeviceName = Annotated[str, Field(pattern=DEVICE_NAME_PATTERN, max_length=64)]
"""A block device name as listed in /sys/block, e.g. `sda`, `nvme0n1`, `dm-0`."""


class Mode(str, Enum):
    """What kubetune may do for a policy."""

    OFF = "Off"
    RECOMMEND = "Recommend"
    AUTO = "Auto"


# --- metav1.Condition --------------------------------------------------------------------------------


class ConditionStatus(str, Enum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(KubeModel):
    """One aspect of the object's state, in the shape of Kubernetes' metav1.Condition."""

    type: str = Field(pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
                      max_length=316)
    """The aspect, in CamelCase, e.g. `Ready`, `Applied`, `Degraded`."""
    status: ConditionStatus
    """`True`, `False` or `Unknown`."""
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", min_length=1, max_length=1024)
    """A CamelCase word saying why the status is what it is, for tools and alerts."""
    message: str = Field(default="", max_length=32768)
    """What happened and what to do about it, for humans."""
    last_transition_time: datetime
    """When the status last changed."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation the condition was computed for."""


def conditions_field() -> Any:
    """The `conditions` field of a status: a list keyed by type, at most 16."""
    return optional_list(16, **list_map("type"))


# --- label selector ------------------------------------------------------------------------------------


class SelectorOperator(str, Enum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


_VALUES_NEEDED = "values must be non-empty for In and NotIn and empty for Exists and DoesNotExist"


class LabelSelectorRequirement(KubeModel):
    """One label condition, as in Kubernetes' metav1.LabelSelectorRequirement."""

    model_config = ConfigDict(json_schema_extra=validations(cel(
        "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)", _VALUES_NEEDED)))

    key: str = Field(min_length=1, max_length=317)
    """The label key."""
    operator: SelectorOperator
    """`In`, `NotIn`, `Exists` or `DoesNotExist`."""
    values: tuple[Annotated[str, Field(max_length=63)], ...] = optional_list(64)
    """Label values for `In` and `NotIn`; empty for `Exists` and `DoesNotExist`."""

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        if (self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)) != bool(self.values):
            raise ValueError(_VALUES_NEEDED)
        return self


def _without_nulls(labels: Any) -> Any:
    """`key: null` in a map is pruned by the API server, so it is absent here too."""
    return {k: v for k, v in labels.items() if v is not None} if isinstance(labels, dict) else labels


class LabelSelector(KubeModel):
    """Selects objects by labels, as in Kubernetes' metav1.LabelSelector; `{}` selects everything."""

    match_labels: Annotated[dict[str, Annotated[str, Field(max_length=63)]], BeforeValidator(_without_nulls)] = \
        Field(default_factory=dict, exclude_if=_is_empty)
    """Labels that must all be present with these values."""
    match_expressions: tuple[LabelSelectorRequirement, ...] = optional_list(32)
    """Label conditions that must all hold."""


# --- top-level object ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrinterColumn:
    """One `kubectl get` column."""

    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"] = "string"
    description: str = ""
    priority: int = 0  # 0 = always shown; 1 = only with -o wide

    def to_dict(self) -> dict[str, Any]:
        column: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            column["description"] = self.description
        if self.priority:
            column["priority"] = self.priority
        return column


AGE_COLUMN = PrinterColumn("Age", ".metadata.creationTimestamp", "date")


@dataclass(frozen=True)
class CRDInfo:
    """What the CRD says beyond the schema: names, scope, printer columns."""

    names: KindNames
    printer_columns: tuple[PrinterColumn, ...] = field(default=(AGE_COLUMN,))


class KubeObject(KubeModel):
    """A whole Kubernetes object: apiVersion, kind, metadata (kept as the server sent it), spec, status."""

    crd: ClassVar[CRDInfo]

    api_version: Literal[constants.API_VERSION] = constants.API_VERSION
    """kubetune.io/v1alpha1."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Standard object metadata."""

    @property
    def name(self) -> str:
        return self.metadata.get("name", "")

    @property
    def namespace(self) -> str | None:
        return self.metadata.get("namespace")

    @property
    def generation(self) -> int | None:
        return self.metadata.get("generation")

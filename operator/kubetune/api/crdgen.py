"""Generates deploy/crds/*.yaml from the API models.

    python -m kubetune.api.crdgen           # write deploy/crds/<plural>.kubetune.io.yaml
    python -m kubetune.api.crdgen --check   # exit 1 if the checked-in files differ

pydantic emits JSON Schema 2020-12; Kubernetes wants a structural OpenAPI v3 schema. This module
only translates (inline $refs, drop titles and nulls, turn `const` into `enum`, flatten whitespace
in descriptions) and refuses anything it cannot translate faithfully. Every Kubernetes-specific
keyword (CEL rules, list types, server-side defaults) comes from the models themselves.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from kubetune import constants
from kubetune.api.common import DURATION_PATTERN, QUANTITY_PATTERN, KubeObject
from kubetune.api.nodetuning import NodeTuning
from kubetune.api.nodetuningpolicy import NodeTuningPolicy
from kubetune.api.performancepolicy import PerformancePolicy

KINDS: tuple[type[KubeObject], ...] = (PerformancePolicy, NodeTuningPolicy, NodeTuning)

# JSON Schema keywords a structural schema may carry; anything else is a translation bug.
_ALLOWED = {
    "type", "description", "properties", "required", "items", "additionalProperties", "enum", "default",
    "format", "pattern", "minLength", "maxLength", "minimum", "maximum", "minItems", "maxItems",
    "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string", "anyOf",
}
# The only union a structural schema allows: int-or-string (a Kubernetes quantity).
_INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]


class SchemaError(Exception):
    """The models produced a schema the generator cannot express as a structural schema."""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Replace a `$ref` (keeping the referring node's description and default) and collapse
    `anyOf: [X, null]` (an optional field) into X."""
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**_resolve(target, defs), **node}
    if node.get("x-kubernetes-int-or-string"):
        if node.get("anyOf") != _INT_OR_STRING:
            raise SchemaError(f"int-or-string must be anyOf {_INT_OR_STRING}: {node}")
        return copy.deepcopy(node)  # a shared list would be a YAML anchor in the CRD
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise SchemaError(f"cannot express a union of {len(options)} types: {options}")
        node = {**_resolve(options[0], defs), **node}
    return node


def to_structural(node: dict[str, Any], defs: dict[str, Any], path: str = "") -> dict[str, Any]:
    """One JSON-schema node (from pydantic) -> a structural OpenAPI v3 node."""
    node = _resolve(node, defs)
    node.pop("title", None)
    if "default" in node and node["default"] in (None, []):
        node.pop("default")  # optional fields and empty lists: absent means the same
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "description" in node:
        node["description"] = " ".join(node["description"].split())
    unknown = set(node) - _ALLOWED - {"$defs"}
    if unknown:
        raise SchemaError(f"{path or '<root>'}: unsupported keywords {sorted(unknown)}")
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields") \
            and not node.get("x-kubernetes-int-or-string"):
        raise SchemaError(f"{path or '<root>'}: no type (a structural schema needs one everywhere)")
    if "properties" in node:
        node["properties"] = {name: to_structural(child, defs, f"{path}.{name}")
                              for name, child in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        node["items"] = to_structural(node["items"], defs, f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = to_structural(node["additionalProperties"], defs, f"{path}{{}}")
    node.pop("$defs", None)
    # type and description first: the YAML reads like `kubectl explain`.
    return {k: node[k] for k in ("type", "description") if k in node} | node


def _part_schema(model: Any, path: str) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return to_structural(schema, schema.get("$defs", {}), path)


def object_schema(kind: type[KubeObject]) -> dict[str, Any]:
    """The openAPIV3Schema of one kind: apiVersion, kind, metadata, spec and status."""
    fields = kind.model_fields
    spec = _part_schema(fields["spec"].annotation, ".spec")
    spec["description"] = " ".join(fields["spec"].description.split())
    status_model = next(a for a in fields["status"].annotation.__args__ if a is not type(None))
    status = _part_schema(status_model, ".status")
    status["description"] = " ".join(fields["status"].description.split())
    return {
        "type": "object",
        "description": " ".join(kind.__doc__.split()),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def crd_manifest(kind: type[KubeObject]) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    names = kind.crd.names
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": names.crd_name},
        "spec": {
            "group": constants.GROUP,
            "scope": names.scope,
            "names": {
                "kind": names.kind,
                "listKind": f"{names.kind}List",
                "plural": names.plural,
                "singular": names.singular,
                "shortNames": list(names.short_names),
                "categories": [constants.CATEGORY],
            },
            "versions": [{
                "name": constants.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [c.to_dict() for c in kind.crd.printer_columns],
                "schema": {"openAPIV3Schema": object_schema(kind)},
            }],
        },
    }


def crd_manifests() -> list[dict[str, Any]]:
    """Every kubetune CRD, as dicts ready for `kubectl apply` or the Kubernetes client."""
    return [crd_manifest(kind) for kind in KINDS]


_HEADER = "# Generated by `python -m kubetune.api.crdgen` from operator/kubetune/api; do not edit.\n"


def render(manifest: dict[str, Any]) -> str:
    """The YAML text of one manifest, stable across runs."""
    return _HEADER + yaml.safe_dump(manifest, sort_keys=False, width=120, allow_unicode=True)


def rendered_files() -> dict[str, str]:
    """File name -> content for deploy/crds."""
    return {f"{m['metadata']['name']}.yaml": render(copy.deepcopy(m)) for m in crd_manifests()}


def default_output_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "deploy" / "crds"


# --- the field reference in docs/api.md -------------------------------------------------------------

DOCS_BEGIN = "<!-- BEGIN GENERATED FIELD REFERENCE (python -m kubetune.api.crdgen) -->"
DOCS_END = "<!-- END GENERATED FIELD REFERENCE -->"
_PATTERN_NAMES = {DURATION_PATTERN: "duration", QUANTITY_PATTERN: "quantity"}


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    if "enum" in node:
        parts.append(" \\| ".join(f"`{v}`" for v in node["enum"]))
    if ("minimum" in node or "maximum" in node) and not node.get("x-kubernetes-int-or-string"):
        parts.append(f"{node.get('minimum', '')}..{node.get('maximum', '')}")
    if "pattern" in node:
        parts.append(_PATTERN_NAMES.get(node["pattern"], "pattern"))
    if "maxItems" in node:
        parts.append(f"at most {node['maxItems']}")
    if node.get("x-kubernetes-list-type") == "map":
        parts.append("unique by " + ", ".join(node["x-kubernetes-list-map-keys"]))
    parts += [rule["message"] for rule in node.get("x-kubernetes-validations", [])]
    return "; ".join(parts)


def _rows(node: dict[str, Any], path: str, required: bool = False):
    kind = "int-or-string" if node.get("x-kubernetes-int-or-string") else node["type"]
    if kind == "array" and node["items"].get("type") != "object":
        kind = f"[]{node['items']['type']}"
        constraints = "; ".join(c for c in (_constraints(node), _constraints(node["items"])) if c)
    else:
        constraints = _constraints(node)
    if required:
        constraints = "; ".join(c for c in ("**required**", constraints) if c)
    default = f"`{json.dumps(node['default'])}`" if "default" in node else ""
    if isinstance(node.get("default"), dict) and node["default"]:
        default = "its fields' defaults"
    if isinstance(node.get("default"), list) and any(isinstance(d, dict) for d in node["default"]):
        default = "see [Defaults](#defaults)"
    text = node.get("description", "").replace("|", "\\|")
    yield f"| `{path}` | {kind} | {default} | {constraints} | {text} |"
    holder = node["items"] if node.get("type") == "array" else node
    for name, child in holder.get("properties", {}).items():
        yield from _rows(child, f"{path}[].{name}" if node.get("type") == "array" else f"{path}.{name}",
                         name in holder.get("required", ()))


def field_reference() -> str:
    """A Markdown table per kind: every field, its type, default, constraints and description."""
    out = [DOCS_BEGIN, ""]
    for manifest in crd_manifests():
        schema = manifest["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        out += [f"### {manifest['spec']['names']['kind']} fields", "",
                "| field | type | default | constraints | description |", "|---|---|---|---|---|"]
        for part in ("spec", "status"):
            out += list(_rows(schema["properties"][part], part))
        out.append("")
    out.append(DOCS_END)
    return "\n".join(out)


def docs_path() -> Path:
    return Path(__file__).resolve().parents[3] / "docs" / "api.md"


def docs_with_reference(text: str) -> str:
    """`text` (docs/api.md) with the generated section replaced by the current one."""
    head, _, rest = text.partition(DOCS_BEGIN)
    _, _, tail = rest.partition(DOCS_END)
    return head + field_reference() + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubetune.api.crdgen", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the files on disk differ from the models")
    parser.add_argument("--out", type=Path, default=default_output_dir(), help="output directory (default: deploy/crds)")
    args = parser.parse_args(argv)

    wanted = rendered_files()
    docs = docs_path()
    docs_text = docs.read_text() if docs.exists() and args.out == default_output_dir() else None
    if args.check:
        if docs_text is not None and docs_with_reference(docs_text) != docs_text:
            print(f"{docs}: the field reference differs from the models", file=sys.stderr)
            print("run `python -m kubetune.api.crdgen` and commit the result", file=sys.stderr)
            return 1
        stale = [name for name, text in wanted.items()
                 if not (args.out / name).exists() or (args.out / name).read_text() != text]
        extra = sorted(p.name for p in args.out.glob("*.kubetune.io.yaml") if p.name not in wanted)
        for name in stale:
            print(f"{args.out / name}: differs from the models", file=sys.stderr)
        for name in extra:
            print(f"{args.out / name}: no model generates it", file=sys.stderr)
        if stale or extra:
            print("run `python -m kubetune.api.crdgen` and commit the result", file=sys.stderr)
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in wanted.items():
        (args.out / name).write_text(text)
        print(args.out / name)
    if docs_text is not None and DOCS_BEGIN in docs_text:
        docs.write_text(docs_with_reference(docs_text))
        print(docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

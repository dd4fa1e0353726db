"""Generates the CustomResourceDefinitions in `crds/` from the typed models. Pure, except
`main`, which writes or checks the files.

pydantic's JSON Schema is turned into a structural OpenAPI v3 schema: references inlined,
optional fields' `null` branches dropped, quantities in Kubernetes' int-or-string form, and a
description demanded on every field so `kubectl explain` documents all of them.

    kubenova-crdgen            # write crds/*.yaml
    kubenova-crdgen --check    # exit 1 when the committed files differ
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from kubenova.api import KINDS, constants
from kubenova.api.meta import Resource

CRD_DIR = Path(__file__).resolve().parents[2]
"""`crds/`: this package's source root, where the generated YAML lives beside the models."""
CHART_CRD_DIR = CRD_DIR.parent / "charts" / "kubenova" / "crds"
"""The chart's copy: Helm installs CRDs only from the chart's own crds/ folder."""

_DROP = {"title", "additionalProperties", "$defs"}
_SCALARS = (str, int, float, bool)


class SchemaError(ValueError):
    """The models produce a schema Kubernetes would reject or leave undocumented."""


def _structural(node: Any, defs: dict[str, Any], path: str) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs, path) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise SchemaError(f"{path}: unions other than 'X or null' are not structural")
        node = {**_structural(branches[0], defs, path), **node}
        if node.get("default") is None:
            node.pop("default", None)
    if node.get("x-kubernetes-int-or-string") and "pattern" not in node:
        # Kubernetes' own form for quantities: the pattern sits beside anyOf, not in it.
        string = next(b for b in node["anyOf"] if "pattern" in b)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        node["pattern"] = string["pattern"]
        if "maxLength" in string:
            node["maxLength"] = string["maxLength"]
    names = node.pop("propertyNames", None)
    if names:
        # Kubernetes has no propertyNames; a map's key lengths become a CEL rule.
        low, high = names.get("minLength", 0), names.get("maxLength")
        checks = [f"size(k) >= {low}" if low else "", f"size(k) <= {high}" if high else ""]
        rule = " && ".join(c for c in checks if c)
        if rule:
            text = (
                f"keys must be {low} to {high} characters long"
                if low
                else (f"keys must be at most {high} characters long")
            )
            node["x-kubernetes-validations"] = [
                *node.get("x-kubernetes-validations", []),
                {"rule": f"self.all(k, {rule})", "message": text},
            ]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP and not (key == "additionalProperties" and isinstance(value, dict)):
            continue
        if key == "default" and not isinstance(value, _SCALARS):
            continue  # object defaults come from the models, not the API server
        if key == "properties":
            out[key] = {k: _structural(v, defs, f"{path}.{k}") for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _structural(value, defs, f"{path}[]")
        else:
            out[key] = value
    if out.get("type") == "object" or "properties" in out:
        out["type"] = "object"
        for name, prop in out.get("properties", {}).items():
            if not prop.get("description"):
                raise SchemaError(
                    f"{path}.{name}: give the field a docstring; kubectl explain shows it"
                )
    if "enum" in out and "default" in out and out["default"] not in out["enum"]:
        raise SchemaError(f"{path}: default {out['default']!r} is not one of {out['enum']}")
    return out


def openapi_schema(kind: type[Resource]) -> dict[str, Any]:
    """The structural schema of one kind's objects."""
    raw = kind.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    props = raw["properties"]
    spec = _structural(props["spec"], defs, "spec")
    status = _structural(props["status"], defs, "status")
    schema: dict[str, Any] = {
        "type": "object",
        "description": (kind.__doc__ or "").strip(),
        "properties": {
            "apiVersion": {"type": "string", "description": "kubenova.io/v1alpha1"},
            "kind": {"type": "string", "description": kind.__name__},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    if "spec" in raw.get("required", []):
        schema["required"] = ["spec"]
    return schema


def crd(kind: type[Resource]) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    info = kind.crd
    name = kind.__name__
    columns = [
        {
            "name": c.name,
            "type": c.type,
            "jsonPath": c.json_path,
            **({"description": c.description} if c.description else {}),
            **({"priority": c.priority} if c.priority else {}),
        }
        for c in info.printer_columns
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{info.plural}.{constants.GROUP}"},
        "spec": {
            "group": constants.GROUP,
            "names": {
                "kind": name,
                "listKind": f"{name}List",
                "plural": info.plural,
                "singular": name.lower(),
                "shortNames": list(info.short_names),
                "categories": [constants.CATEGORY],
            },
            "scope": info.scope,
            "versions": [
                {
                    "name": constants.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    **(
                        {"selectableFields": [{"jsonPath": f} for f in info.selectable_fields]}
                        if info.selectable_fields
                        else {}
                    ),
                    "schema": {"openAPIV3Schema": openapi_schema(kind)},
                }
            ],
        },
    }


def render(kind: type[Resource]) -> str:
    header = "# Generated by kubenova-crdgen from kubenova.api; do not edit by hand.\n"
    return header + yaml.safe_dump(crd(kind), sort_keys=False, width=100)


def files() -> dict[Path, str]:
    """Every generated file and its content: crds/ and the Helm chart's copy."""
    out: dict[Path, str] = {}
    for folder in (CRD_DIR, CHART_CRD_DIR):
        out |= {folder / f"{k.crd.plural}.{constants.GROUP}.yaml": render(k) for k in KINDS}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubenova-crdgen", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in files().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        names = ", ".join(p.name for p in stale)
        print(f"stale CRDs: {names}; run kubenova-crdgen and commit the result", file=sys.stderr)
        return 1
    for p in stale:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kubenova.api import KINDS, crdgen

pytestmark = pytest.mark.unit


def test_committed_crds_equal_what_the_models_generate() -> None:
    for path, text in crdgen.files().items():
        assert path.exists(), f"{path.name} missing: run kubenova-crdgen"
        assert path.read_text() == text, f"{path.name} is stale: run kubenova-crdgen and commit"


def test_check_mode_reports_drift(capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main(["--check"]) == 0


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, prop in schema.get("properties", {}).items():
        out += _walk(prop, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            out += _walk(schema[key], f"{path}[]")
    return out


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_schema_is_structural_and_documented(kind: Any) -> None:
    schema = crdgen.openapi_schema(kind)
    for path, node in _walk(schema):
        assert "$ref" not in node and "title" not in node, path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert "type" in node, f"{path} has no type"
        if path.startswith((".spec.", ".status.")) and not path.endswith("[]"):
            assert node.get("description"), f"{path} has no description"


def test_crd_names_categories_and_status_subresource() -> None:
    for kind in KINDS:
        doc = yaml.safe_load(crdgen.render(kind))
        names = doc["spec"]["names"]
        assert names["categories"] == ["kubenova"]
        assert names["shortNames"] == list(kind.crd.short_names)
        version = doc["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}


def test_a_union_that_is_not_optional_is_refused() -> None:
    with pytest.raises(crdgen.SchemaError, match="not structural"):
        crdgen._structural({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {}, "x")


def test_a_field_without_docstring_is_refused() -> None:
    with pytest.raises(crdgen.SchemaError, match="docstring"):
        crdgen._structural({"type": "object", "properties": {"a": {"type": "string"}}}, {}, "x")

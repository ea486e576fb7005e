"""deploy/crds and docs/api.md against the models: they must not drift, and the generated schema must
be one `kubectl explain` can document."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubetune import constants
from kubetune.api import SYSCTL_ALLOW_LIST, crd_manifests
from kubetune.api.crdgen import DOCS_BEGIN, docs_with_reference, main, rendered_files

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "deploy" / "crds"


def test_checked_in_crds_match_the_models():
    on_disk = {p.name: p.read_text() for p in CRD_DIR.glob("*.yaml")}
    wanted = rendered_files()
    assert sorted(on_disk) == sorted(wanted)
    for name, text in wanted.items():
        assert on_disk[name] == text, f"{name} is stale: run `python -m kubetune.api.crdgen`"


def test_docs_field_reference_matches_the_models():
    text = (REPO / "docs" / "api.md").read_text()
    assert DOCS_BEGIN in text
    assert docs_with_reference(text) == text, "docs/api.md is stale: run `python -m kubetune.api.crdgen`"


def test_check_flag_reports_drift(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--check", "--out", str(tmp_path)]) == 0
    stale = tmp_path / "nodetunings.kubetune.io.yaml"
    stale.write_text(stale.read_text().replace("Recommend", "Recomend"))
    assert main(["--check", "--out", str(tmp_path)]) == 1
    assert "nodetunings.kubetune.io.yaml: differs" in capsys.readouterr().err


def _walk(node: dict, path: str):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("crd", crd_manifests(), ids=lambda c: c["spec"]["names"]["kind"])
def test_every_field_has_a_type_and_a_description(crd):
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    nodes = list(_walk(schema, ""))
    # A structural schema's one typeless node: int-or-string (quantities), with exactly its anyOf.
    assert [p for p, n in nodes if "type" not in n and not n.get("x-kubernetes-int-or-string")] == []
    assert all(n["anyOf"] == [{"type": "integer"}, {"type": "string"}]
               for _, n in nodes if n.get("x-kubernetes-int-or-string"))
    # Items of lists of scalars and map values are described by their list/map field.
    described = [p for p, n in nodes if not p.endswith(("[]", "{}")) and p != ".metadata"]
    assert [p for p in described if not _node_at(schema, p).get("description")] == []
    assert not any("x-kubernetes-preserve-unknown-fields" in n for _, n in nodes)


def _node_at(schema: dict, path: str) -> dict:
    node = schema
    for part in path.strip(".").replace("[]", ".[]").split("."):
        if part:
            node = node["items"] if part == "[]" else node["properties"][part]
    return node


@pytest.mark.parametrize("crd", crd_manifests(), ids=lambda c: c["spec"]["names"]["kind"])
def test_crd_names_status_and_columns(crd):
    spec = crd["spec"]
    assert spec["group"] == constants.GROUP and spec["names"]["categories"] == [constants.CATEGORY]
    assert spec["names"]["shortNames"]
    version = spec["versions"][0]
    assert version["name"] == constants.VERSION and version["subresources"] == {"status": {}}
    assert version["additionalPrinterColumns"][-1]["name"] == "Age"


def test_sysctl_enum_is_the_allow_list_and_docs_list_every_key():
    crd = yaml.safe_load((CRD_DIR / "nodetuningpolicies.kubetune.io.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["sysctls"]["items"]["properties"]["name"]["enum"] == list(SYSCTL_ALLOW_LIST)
    docs = (REPO / "docs" / "api.md").read_text()
    assert [k for k in SYSCTL_ALLOW_LIST if f"`{k}`" not in docs] == []

"""The chart's README documents every value in values.yaml (and nothing that is not one)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "kubetune"


def leaves(values: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in values.items():
        path = f"{prefix}.{key}" if prefix else key
        keys.add(path)
        if isinstance(value, dict) and value:
            keys |= leaves(value, path)
    return keys


def test_readme_table_covers_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = set(re.findall(r"^\| `([\w.]+)` \|", (CHART / "README.md").read_text(), re.M))
    known = leaves(values)
    assert documented <= known, f"documented but not values: {documented - known}"
    # a key is covered when it, or the object holding it, has a row
    missing = {k for k in known if not any(k == d or k.startswith(d + ".") for d in documented)
               and not any(d.startswith(k + ".") for d in documented)}
    assert not missing, f"values without a README row: {sorted(missing)}"

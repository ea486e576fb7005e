"""Every rewrite of tenancy.confine, accepted by a real Prometheus (Debian's): the text kubetune sends
instead of a tenant's template is PromQL that Prometheus itself parses, not only the parser kubetune
checks it with (tests/unit/test_tenancy.py holds the table)."""

from __future__ import annotations

import pytest
import requests

from kubetune.tenancy import confine
from tests.unit.test_tenancy import CONFINED, NS

pytestmark = pytest.mark.cluster


def test_every_confined_rewrite_is_accepted_by_prometheus(prometheus):
    refused = {}
    for name, query, _ in CONFINED:
        answer = requests.get(f"{prometheus.url}/api/v1/query", params={"query": confine(query, NS)}, timeout=10)
        if answer.status_code != 200 or answer.json().get("status") != "success":
            refused[name] = answer.text[:200]
    assert not refused, refused

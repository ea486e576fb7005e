"""The index's record of a PerformancePolicy keeps the status as compact JSON (issue 12: the parsed model
was 14 KiB a policy, the JSON 1.8) and gives it back as the typed model the loop reads."""

import json

from kubetune.api.performancepolicy import PerformancePolicyStatus
from kubetune.records import EMPTY_STATUS, PolicyRecord, encode_status

from tests.unit.loopfakes import policy, spec

# As the operator writes it (a bench policy's status, shortened).
WRITTEN = {
    "observedGeneration": 1,
    "conditions": [{"type": "Ready", "status": "True", "reason": "Evaluated", "message": "NoRuleFired: no rule fired",
                    "lastTransitionTime": "2026-11-30T02:30:22Z", "observedGeneration": 1}],
    "containers": [{"name": "app", "current": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                    "recommendation": {"target": {"cpu": "50m", "memory": "1Mi"}}, "utilization": {"cpu": 0}}],
    "signals": {"cpuUtilization": 12.5, "highLoad": False, "trend": "Steady", "sampledAt": "2026-11-30T02:30:22Z"},
}


def test_the_status_reads_back_as_the_model_the_api_server_holds():
    record = policy(status=WRITTEN)
    assert isinstance(record.status_json, bytes) and len(record.status_json) < len(json.dumps(WRITTEN))
    assert record.status == PerformancePolicyStatus.model_validate(WRITTEN)
    assert str(record.status.containers[0].recommendation.target.cpu) == "50m"


def test_a_status_given_already_encoded_reads_back_the_same():
    model = PerformancePolicyStatus.model_validate(WRITTEN)
    assert PolicyRecord("ns", "pp", "uid", 1, "", spec(), None, encode_status(WRITTEN)).status == model


def test_an_unreadable_status_reads_as_empty_and_does_not_stop_the_policy():
    record = policy(status={"conditions": "not a list"})
    assert record.status == EMPTY_STATUS and record.spec is not None


def test_no_status_yet_is_the_empty_status():
    assert policy().status == EMPTY_STATUS and policy().past_actions() == ()


def test_mentions_answers_without_parsing_and_never_misses_what_the_status_holds():
    record = policy(status=WRITTEN)
    assert record.mentions("Ready") and record.mentions("NoRuleFired")
    assert not record.mentions("ProcessTuning") and not policy().mentions("Ready")

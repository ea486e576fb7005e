"""Conditions as metav1 wants them: lastTransitionTime moves only when the status flips; an update that
changes nothing leaves the condition as it was (and costs no rebuild); the last update of a type wins."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from kubetune.reasons import ConditionType, Reason
from kubetune.status import with_conditions

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
READY = ConditionType.READY


def test_transition_time_moves_only_when_the_status_flips():
    first = with_conditions((), [(READY, True, Reason.EVALUATED, "NoRuleFired: no rule fired")], generation=1, now=T0)
    reworded = with_conditions(first, [(READY, True, Reason.EVALUATED, "ScaledUp: 500m -> 625m")], generation=1,
                               now=T0 + timedelta(minutes=1))
    flipped = with_conditions(reworded, [(READY, False, Reason.TARGET_NOT_FOUND, "gone")], generation=1,
                              now=T0 + timedelta(minutes=2))
    assert reworded[0].last_transition_time == T0 and reworded[0].message.startswith("ScaledUp")
    assert flipped[0].last_transition_time == T0 + timedelta(minutes=2) and flipped[0].reason == "TargetNotFound"


def test_an_update_that_changes_nothing_returns_the_same_conditions():
    first = with_conditions((), [(READY, True, Reason.EVALUATED, "x")], generation=3, now=T0)
    again = with_conditions(first, [(READY, True, Reason.EVALUATED, "x")], generation=3, now=T0 + timedelta(hours=1))
    assert again is first


def test_the_last_update_of_a_type_wins_even_when_it_restores_the_current_value():
    first = with_conditions((), [(ConditionType.DEGRADED, False, Reason.AS_EXPECTED, "fine")], generation=1, now=T0)
    result = with_conditions(first, [(ConditionType.DEGRADED, True, Reason.ACTION_FAILED, "boom"),
                                     (ConditionType.DEGRADED, False, Reason.AS_EXPECTED, "fine")],
                             generation=1, now=T0)
    assert (result[0].status.value, result[0].reason) == ("False", "AsExpected")

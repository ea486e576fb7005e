"""Upkeep: what earlier actions still owe, done before a new decision. Recorded values brought onto
pods (or the template) that do not have them — an operator stopped between recording and acting, a pod
created from the unchanged template after an in-place resize, a resize the kubelet found infeasible —
and the verification of the last applied action once its window has passed, with the rollback of a
change that made things worse. Changes go through the actuator; the report says what happened.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from kubetune.actuator import Actuator, Applied, infeasible_pods, outstanding_changes, recorded_changes
from kubetune.api.common import Mode, parse_duration
from kubetune.api.performancepolicy import ActionRecord, ScalingMethod, VerificationResult, VerificationState
from kubetune.decisions import Change
from kubetune.explain import Event, Report
from kubetune.gates import PolicyFacts
from kubetune.gather import PolicyMetrics
from kubetune.kube import KubeError
from kubetune.metrics import OperatorMetrics
from kubetune.prometheus import PrometheusUnavailable
from kubetune.reasons import ConditionType, Reason
from kubetune.status import verifying
from kubetune.verification import Outcome, Tolerance, verify_action
from kubetune.workloads import ContainerResources

log = logging.getLogger(__name__)


def _verification(record: ActionRecord, state: VerificationState, message: str) -> ActionRecord:
    old = record.verification
    return record.model_copy(update={"verification": VerificationResult(
        state=state, message=message[:1024], deadline=old.deadline if old else None)})


def _resources_before(record: ActionRecord, resources: tuple[ContainerResources, ...]) -> tuple[ContainerResources, ...]:
    """The resources as they were before `record` (its `from` values put back)."""
    before = {c.name: (dict(c.requests), dict(c.limits)) for c in resources}
    for ch in recorded_changes(record):
        if ch.old is not None and ch.container in before:
            before[ch.container][0 if ch.value == "requests" else 1][ch.resource] = ch.old
    return tuple(ContainerResources(name, req, lim) for name, (req, lim) in before.items())


class Upkeep:
    def __init__(self, actuator: Actuator, gather: PolicyMetrics, metrics: OperatorMetrics):
        self.actuator, self.gather, self.metrics = actuator, gather, metrics

    async def run(self, facts: PolicyFacts, report: Report, now: datetime) -> None:
        if facts.policy.spec.mode is Mode.AUTO:
            await self._finish_recorded(facts, report)
        await self._verify(facts, report, now)

    async def _finish_recorded(self, facts: PolicyFacts, report: Report) -> None:
        """Bring pods (or the template) to the values kubetune recorded: an operator stopped between
        recording and acting, a pod created from the unchanged template after an in-place resize, a
        resize the kubelet found infeasible (rolled out instead under InPlaceOrRollout)."""
        policy, spec, target = facts.policy, facts.policy.spec, facts.policy.target
        records = policy.past_actions()
        infeasible = infeasible_pods(facts.pods)
        try:
            if spec.scaling.method is ScalingMethod.ROLLOUT:
                missing = self._template_missing(records, facts)
                if missing:
                    applied = await asyncio.to_thread(self.actuator.roll_out, target, missing, facts.workload.template)
                    self._completed(report, target, missing, applied)
                return
            if infeasible:
                await self._infeasible(facts, report, infeasible)
            skip = {p.name for p in infeasible} | {p.name for p in facts.pods if p.resize_pending or p.resize_in_progress}
            owed = {name: changes for name, changes in outstanding_changes(records, facts.workload.template, facts.pods).items()
                    if name not in skip}
            if owed:
                applied = await asyncio.to_thread(self.actuator.resize_pods, owed, {p.name: p for p in facts.pods})
                self._completed(report, target, [ch for changes in owed.values() for ch in changes], applied)
        except KubeError as e:
            report.set(ConditionType.DEGRADED, True, Reason.ACTION_FAILED, f"finishing the recorded change failed: {e}")

    @staticmethod
    def _template_missing(records: tuple[ActionRecord, ...], facts: PolicyFacts) -> list[Change]:
        last = records[0] if records else None
        if not verifying(last):
            return []
        template = {c.name: c for c in facts.workload.template}
        return [ch for ch in recorded_changes(last) if ch.container in template and
                (template[ch.container].requests if ch.value == "requests" else template[ch.container].limits
                 ).get(ch.resource) != ch.new]

    def _completed(self, report: Report, target, changes: list[Change], applied: Applied) -> None:
        summary = ", ".join(sorted({ch.describe() for ch in changes}))[:600]
        log.info("Completed %s/%s %s: %s", target.kind, target.name, summary, applied.how)
        report.events.append(Event(Reason.COMPLETED, f"recorded change finished {applied.how}: {summary}",
                                   on_workload=True))

    async def _infeasible(self, facts: PolicyFacts, report: Report, pods) -> None:
        names = ", ".join(p.name for p in pods)[:300]
        last = facts.policy.status.last_action
        if facts.policy.spec.scaling.method is ScalingMethod.IN_PLACE_OR_ROLLOUT and last and last.applied:
            changes = recorded_changes(last, undo=last.verification is not None
                                       and last.verification.state is VerificationState.ROLLED_BACK)
            applied = await asyncio.to_thread(self.actuator.roll_out, facts.policy.target, changes,
                                              facts.workload.template)
            message = f"the kubelet cannot resize {names} in place (Infeasible); rolled out instead"
            report.events.append(Event(Reason.ROLLED_OUT, message, warning=True, on_workload=True))
            log.info("RolledOut %s/%s: %s (%s)", facts.policy.target.kind, facts.policy.target.name, message, applied.how)
            return
        report.set(ConditionType.DEGRADED, True, Reason.RESIZE_INFEASIBLE,
                   f"the kubelet cannot resize {names} in place (Infeasible) and the scaling method is "
                   f"{facts.policy.spec.scaling.method.value}: the pods keep their old resources")

    async def _verify(self, facts: PolicyFacts, report: Report, now: datetime) -> None:
        """Once the verification window of the last applied action has passed, compare the signals
        before and after it; roll it back (to the recorded previous values) if it made things worse."""
        last = report.status.last_action
        if not verifying(last) or last.verification.deadline is None or now < last.verification.deadline:
            return
        spec = facts.policy.spec
        try:
            windows = await asyncio.to_thread(self.gather.verification_windows, facts, last,
                                              _resources_before(last, facts.resources))
        except PrometheusUnavailable as e:
            if now - last.verification.deadline >= parse_duration(spec.verification.window):
                report.replace_last_action(_verification(last, VerificationState.FAILED, f"not verified: {e}"))
            return
        result = verify_action(windows, Tolerance(relative=spec.verification.max_regression_percent / 100))
        window = parse_duration(spec.verification.window)
        if result.outcome is Outcome.INSUFFICIENT_DATA and now - last.verification.deadline < window:
            return  # too few samples yet (a new container's first minute): verify again, up to one more window
        if not result.should_roll_back:
            # Every metric's verdict, not only the decisive one: "not enough samples" for CPU must not
            # hide what latency did.
            report.replace_last_action(_verification(last, VerificationState.PASSED,
                                                     "; ".join(v.message for v in result.metrics) or result.message))
            return
        if not spec.verification.rollback_on_regression or spec.mode is not Mode.AUTO:
            why = "rollback disabled" if spec.mode is Mode.AUTO else f"mode {spec.mode.value}: not rolled back"
            report.replace_last_action(_verification(last, VerificationState.FAILED, f"regressed, {why}: {result.message}"))
            report.set(ConditionType.DEGRADED, True, Reason.ACTION_FAILED, f"the last change regressed ({why})")
            return
        undo = recorded_changes(last, undo=True)
        target = facts.policy.target
        try:
            applied = await asyncio.to_thread(self.actuator.apply, target, spec.scaling.method, undo,
                                              facts.resources, facts.pods)
        except KubeError as e:
            self.metrics.actions.labels(result="failed").inc()
            report.replace_last_action(_verification(last, VerificationState.FAILED,
                                                     f"regressed, rollback failed: {e}; {result.message}"))
            report.set(ConditionType.DEGRADED, True, Reason.ACTION_FAILED, f"rollback failed: {e}")
            return
        self.metrics.actions.labels(result="rolled_back").inc()
        message = f"rolled back {applied.how}: {result.message}"
        for change in undo:
            log.info("RolledBack %s/%s %s (%s)", target.kind, target.name, change.describe(), result.message[:300])
        report.replace_last_action(_verification(last, VerificationState.ROLLED_BACK, message))
        report.set(ConditionType.DEGRADED, True, Reason.ROLLED_BACK, message)
        report.events += [Event(Reason.ROLLED_BACK, f"kubetune: {message}", warning=True),
                          Event(Reason.ROLLED_BACK, f"kubetune: {message}", warning=True, on_workload=True)]

"""The one executor that performs every knob write on the host.

For each target: validate -> skip unchanged -> journal the original -> write -> read back and
compare -> report. Keys that were written before (they are in the journal) but are no longer in
the plan get their original back and leave the journal. Nothing is rolled back because the agent
restarted: the journal is only acted on when a plan arrives, and a key still in the plan is simply
compared with the live value.

States reported per key (``TuningState``):

    Applied      live value equals the target (written now, or already there)
    Planned      dry run (mode Recommend): what would change, current -> target; nothing written
    Unsupported  the node has no such file (no cpufreq, no such device)
    Refused      unknown key, invalid value, device name escaping /sys/block; nothing written
    Conflict     someone else changed the value after the agent wrote it; not fought over
    Restored     the key left the plan and its original value is back
    Failed       the write raised (EPERM, a read-only /sys), the value read back differs from the
                 value written, the original could not be journaled (nothing written), or the
                 journal is unusable (held by another agent process, or unreadable)

Conflict rule: the journal holds what the agent last wrote. If the live value is neither that nor
the original, and the target has not changed since, another writer owns the value now: the agent
reports it (key and the writer's value) and leaves it alone. A *new* target is a new intent and is
written. A live value equal to the original means our write never happened (e.g. a crash between
journal and write), so it is applied again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from .errors import AgentError, KnobError
from .hostfs import HostFS
from .journal import Journal
from .knobs import FileValues, Knob, KnobRegistry, default_registry

log = logging.getLogger(__name__)

SECTION = "knobs"


class TuningState(StrEnum):
    APPLIED = "Applied"
    PLANNED = "Planned"
    UNSUPPORTED = "Unsupported"
    REFUSED = "Refused"
    CONFLICT = "Conflict"
    RESTORED = "Restored"
    FAILED = "Failed"


@dataclass(frozen=True)
class KnobTarget:
    """One knob of the plan: key (``vm.swappiness``, ``block.sda.scheduler``), value, why."""

    key: str
    value: str
    reason: str = ""


@dataclass(frozen=True)
class KnobResult:
    """What happened to one key; values are display strings (None when unknown)."""

    key: str
    state: TuningState
    original: str | None = None
    desired: str | None = None
    current: str | None = None
    message: str = ""


class KnobExecutor:
    """Applies a plan of ``KnobTarget`` to the host and restores what leaves it."""

    def __init__(self, fs: HostFS, journal: Journal, registry: KnobRegistry | None = None) -> None:
        self.fs = fs
        self.journal = journal
        self.registry = registry or default_registry()

    def reconcile(self, targets: Sequence[KnobTarget], *, dry_run: bool = False) -> list[KnobResult]:
        """Apply ``targets`` (or only plan them when ``dry_run``); restore journaled keys not in it.
        Without a usable journal (another agent process holds it, or it was unreadable) nothing is
        planned, written or restored: every target is Failed with the reason."""
        blocked = journal_blocked(self.journal)
        if blocked:
            return [KnobResult(t.key, TuningState.FAILED, desired=str(t.value), message=blocked)
                    for t in targets]
        results: list[KnobResult] = []
        seen: set[str] = set()
        for target in targets:
            if target.key in seen:
                results.append(KnobResult(target.key, TuningState.REFUSED, desired=target.value,
                                          message="key appears twice in the plan; first one used"))
                continue
            seen.add(target.key)
            results.append(self.apply(target, dry_run=dry_run))
        for key in self.journal.entries(SECTION):
            if key not in seen:
                results.append(self.restore(key, dry_run=dry_run))
        return results

    def live(self, key: str) -> str | None:
        """The live value of ``key`` as shown in status; None if it cannot be read here."""
        try:
            knob, device = self.registry.resolve(key)
            return knob.display(knob.read(self.fs, device))
        except (KnobError, OSError):
            return None

    def apply(self, target: KnobTarget, *, dry_run: bool = False) -> KnobResult:
        key = target.key
        try:
            knob, device = self.registry.resolve(key)
            live = knob.read(self.fs, device)
            desired = knob.plan(self.fs, device, key, target.value)
        except KnobError as error:
            return KnobResult(key, TuningState(error.state), desired=str(target.value),
                              message=error.reason)
        entry = self.journal.get(SECTION, key)
        original = entry["original"] if entry else live
        show = _Display(knob, original, desired, live)
        if live == desired:
            if dry_run:
                return show.result(key, TuningState.PLANNED, f"already {show.current}; no change")
            return show.result(key, TuningState.APPLIED, "")
        if entry and live not in (entry["written"], entry["original"]) and desired == entry["written"]:
            return show.result(key, TuningState.CONFLICT,
                               f"{key} was changed to {show.current} by another writer after the "
                               f"agent set {show.desired}; not overwritten")
        if entry and entry.get("rejected") == desired and live == entry["written"]:
            return show.result(key, TuningState.FAILED,
                               f"the kernel keeps {show.current} instead of {show.desired}")
        change = f"{show.current} -> {show.desired}" + (f": {target.reason}" if target.reason else "")
        if dry_run:
            return show.result(key, TuningState.PLANNED, change)
        if entry is None:
            entry = {"original": live, "recordedAt": datetime.now(UTC).isoformat()}
        try:
            self.journal.put(SECTION, key, {**entry, "written": desired})
        except (OSError, AgentError) as error:
            # No journal entry, no write: a change whose original could be lost is not made.
            log.warning("knob %s: not written, the journal cannot be written: %s", key, error)
            return show.result(key, TuningState.FAILED, f"not written: the original could not be "
                               f"journaled ({error})")
        return self._write(knob, device, key, desired, entry, show, change)

    def restore(self, key: str, *, dry_run: bool = False) -> KnobResult:
        """Put back the journaled original of ``key`` unless another writer has changed it since."""
        entry = self.journal.get(SECTION, key)
        if entry is None:
            return KnobResult(key, TuningState.RESTORED, message="not changed by the agent")
        original: FileValues = entry["original"]
        try:
            knob, device = self.registry.resolve(key)
            live = knob.read(self.fs, device)
        except KnobError as error:
            note = "" if dry_run else self._forget(key)
            return KnobResult(key, TuningState(error.state),
                              message=f"cannot restore ({error.reason})" + (note or "; journal entry dropped"))
        show = _Display(knob, original, original, live)
        if live == original:
            note = "" if dry_run else self._forget(key)
            return show.result(key, TuningState.RESTORED, "already at its original value" + note)
        if live != entry["written"]:
            if dry_run:
                return show.result(key, TuningState.PLANNED, f"would leave {show.current}: set by "
                                   "another writer, not the agent")
            note = self._forget(key)
            log.warning("knob %s: left at %s set by another writer (original %s not restored)",
                        key, show.current, show.original)
            return show.result(key, TuningState.CONFLICT,
                               f"{key} was changed to {show.current} by another writer; left "
                               f"as is, original {show.original} not restored{note}")
        change = f"{show.current} -> {show.original}: restore original, key left the plan"
        if dry_run:
            return show.result(key, TuningState.PLANNED, change)
        result = self._write(knob, device, key, original, entry, show, change,
                             done=TuningState.RESTORED)
        if result.state is TuningState.RESTORED:
            note = self._forget(key)
            if note:
                result = replace(result, message=result.message + note)
        return result

    def _forget(self, key: str) -> str:
        """Drop ``key`` from the journal; if the journal cannot be written the entry stays (the next
        cycle finds the original in place and tries again) and the returned note says so."""
        try:
            self.journal.remove(SECTION, key)
        except (OSError, AgentError) as error:
            log.warning("knob %s: journal entry kept, the journal cannot be written: %s", key, error)
            return f"; journal entry kept until the journal can be written ({error})"
        return ""

    def _write(self, knob: Knob, device: str | None, key: str, values: FileValues, entry: dict,
               show: _Display, change: str, done: TuningState = TuningState.APPLIED) -> KnobResult:
        try:
            for path, value in values.items():
                self.fs.write(path, value)
            after = knob.read(self.fs, device)
        except (OSError, KnobError) as error:
            log.warning("knob %s: write failed (%s): %s", key, change, error)
            return show.result(key, TuningState.FAILED, f"write failed: {error}")
        show = _Display(knob, show.original_values, show.desired_values, after)
        if after != values:
            if done is TuningState.APPLIED:
                try:
                    self.journal.put(SECTION, key, {**entry, "written": after, "rejected": values})
                except (OSError, AgentError) as error:  # the next cycle tries the write again
                    log.warning("knob %s: journal not updated: %s", key, error)
            log.warning("knob %s: wrote %s, read back %s", key, show.desired, show.current)
            return show.result(key, TuningState.FAILED,
                               f"wrote {show.desired}, read back {show.current}")
        log.info("knob %s: %s", key, change)
        return show.result(key, done, change)


def journal_blocked(journal: Journal) -> str | None:
    """Why ``journal`` cannot be used by this process now (another agent process holds it, or it
    was unreadable), else None. Shared by the knob and process executors."""
    if not journal.acquire():
        return (f"standing by: another agent process (pid {journal.holder() or '?'}) holds "
                f"{journal.directory}/lock; nothing is written by this one")
    problem = journal.check()
    return f"not tuned: {problem}" if problem else None


class _Display:
    """Per-file values of one key rendered as status strings."""

    def __init__(self, knob: Knob, original: FileValues, desired: FileValues, current: FileValues):
        self.original_values, self.desired_values = original, desired
        self.original = knob.display(original)
        self.desired = knob.display(desired)
        self.current = knob.display(current)

    def result(self, key: str, state: TuningState, message: str) -> KnobResult:
        return KnobResult(key, state, self.original, self.desired, self.current, message)

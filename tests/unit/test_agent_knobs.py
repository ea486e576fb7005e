"""Knob registry: allow-list, validation tables, device names, scheduler aliases, self-check."""

from __future__ import annotations

import pytest

from kubetune_agent.errors import AgentError, KnobRefused
from kubetune_agent.knobs import (
    IntRange,
    IntVector,
    KnobRegistry,
    SysctlKnob,
    bracketed,
    choose_scheduler,
    default_registry,
)

pytestmark = pytest.mark.unit

REGISTRY = default_registry()


@pytest.mark.parametrize(
    ("key", "knob", "device"),
    [
        ("vm.swappiness", "vm.swappiness", None),
        ("sysctl.net.core.rmem_max", "sysctl.net.core.rmem_max", None),
        ("cpu.maxFrequencyPercent", "cpu.maxFrequencyPercent", None),
        ("cpu.governor", "cpu.governor", None),
        ("block.sda.scheduler", "block.<dev>.scheduler", "sda"),
        ("block.nvme0n1.readAheadKb", "block.<dev>.readAheadKb", "nvme0n1"),
        ("block.dm-0.scheduler", "block.<dev>.scheduler", "dm-0"),
        ("block.md.0.scheduler", "block.<dev>.scheduler", "md.0"),
    ],
    ids=lambda v: str(v),
)
def test_resolves_allow_listed_keys(key, knob, device):
    resolved, resolved_device = REGISTRY.resolve(key)
    assert (resolved.name, resolved_device) == (knob, device)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("vm.overcommit_memory", "unknown knob"),
        ("kernel.sysrq", "unknown knob"),
        ("sysctl.kernel.sysrq", "unknown knob"),
        ("net.core.rmem_max", "unknown knob"),  # the API's key is sysctl.net.core.rmem_max
        ("sysctl.vm.swappiness", "unknown knob"),  # vm.swappiness has its own key
        ("swappiness", "unknown knob"),
        ("", "unknown knob"),
        ("block..scheduler", "unknown knob"),
        ("block.../sda.scheduler", "not a plain /sys/block entry"),
        ("block.sda/../../etc.scheduler", "not a plain /sys/block entry"),
        ("block.sda/queue.scheduler", "not a plain /sys/block entry"),
        ("block.-x.readAheadKb", "not a plain /sys/block entry"),
        ("block...scheduler", "not a plain /sys/block entry"),
        ("block.sda.read_ahead_kb", "unknown knob"),
    ],
    ids=lambda v: repr(v),
)
def test_refuses_unknown_keys_and_escaping_devices(key, reason):
    with pytest.raises(KnobRefused, match=reason):
        REGISTRY.resolve(key)


@pytest.mark.parametrize(
    ("check", "value", "expected"),
    [
        (IntRange(0, 200), "0", "0"),
        (IntRange(0, 200), " 200\n", "200"),
        (IntRange(0, 200), "201", "outside 0..200"),
        (IntRange(0, 200), "-1", "outside 0..200"),
        (IntRange(0, 200), "ten", "not an integer"),
        (IntRange(0, 200), "1.5", "not an integer"),
        (IntVector(3, 4096, 2**31 - 1), "4096  87380\t6291456", "4096 87380 6291456"),
        (IntVector(3, 4096, 2**31 - 1), "4096 87380", "must be 3 integers"),
        (IntVector(3, 4096, 2**31 - 1), "9000 4096 6291456", "non-decreasing"),
        (IntVector(2, 1024, 65535), "1000 60000", "outside 1024..65535"),
    ],
    ids=lambda v: repr(v),
)
def test_value_checks(check, value, expected):
    if expected[0].isdigit():
        assert check.canonical("k", value) == expected
    else:
        with pytest.raises(KnobRefused, match=expected):
            check.canonical("k", value)


def test_swappiness_range_is_0_to_200():
    (knob, _) = REGISTRY.resolve("vm.swappiness")
    assert (knob.check.low, knob.check.high) == (0, 200)
    assert knob.path == "proc/sys/vm/swappiness"


AVAILABLE = ["none", "mq-deadline", "kyber", "bfq"]


@pytest.mark.parametrize(
    ("value", "available", "rotational", "expected"),
    [
        ("deadline", AVAILABLE, False, "mq-deadline"),
        ("cfq", AVAILABLE, True, "bfq"),
        ("noop", AVAILABLE, False, "none"),
        ("kyber", AVAILABLE, False, "kyber"),
        ("auto", AVAILABLE, True, "bfq"),
        ("auto", AVAILABLE, False, "none"),
        ("auto", ["mq-deadline", "kyber"], True, "mq-deadline"),
        ("auto", ["mq-deadline", "kyber"], False, "mq-deadline"),
        ("cfq", ["none", "mq-deadline"], True, "refused"),
        ("anticipatory", AVAILABLE, False, "refused"),
    ],
    ids=lambda v: str(v),
)
def test_choose_scheduler(value, available, rotational, expected):
    if expected == "refused":
        with pytest.raises(KnobRefused, match="not available"):
            choose_scheduler("block.sda.scheduler", value, available, rotational)
    else:
        assert choose_scheduler("block.sda.scheduler", value, available, rotational) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("none [mq-deadline] kyber bfq", "mq-deadline"), ("[none] mq-deadline", "none"), ("none", "none")],
)
def test_bracketed(text, expected):
    assert bracketed(text) == expected


@pytest.mark.parametrize(
    ("knobs", "problem"),
    [
        ([SysctlKnob("vm.swappiness", IntRange(0, 1)), SysctlKnob("vm.swappiness", IntRange(0, 1))],
         "declared twice"),
        ([SysctlKnob("vm.x", IntRange(5, 1))], "outside 5..1"),
    ],
    ids=["duplicate", "impossible-range"],
)
def test_registry_checks_itself_when_built(knobs, problem):
    with pytest.raises(AgentError, match=problem):
        KnobRegistry(knobs)


def test_registry_refuses_paths_outside_proc_sys_and_sys():
    class Escaping(SysctlKnob):
        def path_templates(self):
            return ("etc/shadow",)

    with pytest.raises(AgentError, match="outside proc/sys, sys"):
        KnobRegistry([Escaping("vm.x", IntRange(0, 1))])

"""Properties of the value parsers (hypothesis): durations and quantities round-trip and fail only with
ValueError, and the node agent's knob value checks accept only what the kernel accepts, read the way
the kernel reads it. The kernel's side is written down here from its sources and docs: the grammar of
proc_dointvec (kernel/sysctl.c) and each sysctl's range (Documentation/admin-guide/sysctl/*.rst and
the handlers' extra1/extra2 bounds). Two knobs are checked against this machine's real /proc/sys by
writing back the value already there (never a different one)."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from kubetune.api.common import DURATION_PATTERN, QUANTITY_PATTERN, parse_duration, parse_quantity
from kubetune.workloads import format_quantity
from kubetune_agent.errors import KnobRefused
from kubetune_agent.knobs import SYSCTLS, IntRange, IntVector

INT_MAX, LONG_MAX, ULONG_MAX = 2**31 - 1, 2**63 - 1, 2**64 - 1
GO_MAX_NS = 2**63 - 1
UNITS_NS = {"h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6}

# --- durations ---------------------------------------------------------------------------------------

duration_parts = st.lists(st.tuples(st.integers(0, 10**7), st.sampled_from(list(UNITS_NS))), min_size=1, max_size=4)


@pytest.mark.unit
@given(duration_parts)
def test_a_duration_reads_as_the_sum_of_its_parts_within_gos_range(parts):
    text = "".join(f"{n}{u}" for n, u in parts)
    nanoseconds = sum(n * UNITS_NS[u] for n, u in parts)
    if nanoseconds > GO_MAX_NS:  # what Kubernetes (Go's time.ParseDuration) refuses
        with pytest.raises(ValueError):
            parse_duration(text)
    else:
        assert parse_duration(text) == timedelta(microseconds=nanoseconds // 1000)


@pytest.mark.unit
@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10**5)).map(
    lambda d: timedelta(milliseconds=d // timedelta(milliseconds=1))))
def test_a_duration_written_in_hours_minutes_seconds_and_ms_round_trips(d):
    ms = d // timedelta(milliseconds=1)
    hours, rest = divmod(ms, 3600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, ms = divmod(rest, 1000)
    text = f"{hours}h{minutes}m{seconds}s{ms}ms"
    assert re.fullmatch(DURATION_PATTERN, text) and parse_duration(text) == d


@pytest.mark.unit
@given(st.one_of(st.text(max_size=12), st.from_regex(DURATION_PATTERN, fullmatch=True)))
def test_a_bad_duration_fails_with_a_value_error_naming_it(text):
    try:
        parse_duration(text)
    except ValueError as e:
        assert repr(text) in str(e)


# --- quantities --------------------------------------------------------------------------------------

SUFFIXES = {"": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": 10**3, "M": 10**6,
            "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
            "Pi": 2**50, "Ei": 2**60}
numbers = st.one_of(st.integers(0, 10**15).map(str),
                    st.decimals(0, 10**6, places=3, allow_nan=False, allow_infinity=False).map(str))


@pytest.mark.unit
@given(numbers, st.one_of(st.sampled_from(list(SUFFIXES)), st.integers(-20, 20).map(lambda e: f"e{e}")))
def test_a_quantity_reads_as_its_number_times_its_suffix(number, suffix):
    text = number + suffix
    expected = Decimal(number) * (Decimal(10) ** int(suffix[1:]) if suffix.startswith("e") else Decimal(SUFFIXES[suffix]))
    assert re.fullmatch(QUANTITY_PATTERN, text)
    assert parse_quantity(text) == expected


@pytest.mark.unit
@given(st.sampled_from(["cpu", "memory"]), st.floats(1e-4, 1e4))
def test_format_quantity_round_trips_up_to_one_unit_rounded_up(resource, amount):
    amount = amount if resource == "cpu" else amount * 2**30
    unit = Decimal("0.001") if resource == "cpu" else Decimal(2**20)
    back = parse_quantity(format_quantity(resource, amount))
    assert Decimal(amount) - Decimal("1e-6") * unit <= back < Decimal(amount) + unit or back == unit


@pytest.mark.unit
@given(st.text(alphabet="0123456789.eEkKmMGiun+- ", max_size=8))
def test_a_quantity_is_refused_only_with_a_value_error(text):
    try:
        value = parse_quantity(text)
    except ValueError:
        assert not re.fullmatch(QUANTITY_PATTERN, text)
    else:
        assert value >= 0


# --- knob values against the kernel -----------------------------------------------------------------

# Each allow-listed sysctl's range as the kernel enforces it (handler bounds; ULONG for doulongvec).
KERNEL_RANGES = {
    "vm.swappiness": (0, 200),                    # proc_dointvec_minmax, SYSCTL_ZERO..SYSCTL_TWO_HUNDRED
    "vm.vfs_cache_pressure": (0, INT_MAX),        # proc_dointvec_minmax, SYSCTL_ZERO
    "vm.dirty_ratio": (0, 100),                   # proc_dointvec_minmax, SYSCTL_ZERO..SYSCTL_ONE_HUNDRED
    "vm.dirty_background_ratio": (0, 100),
    "net.core.rmem_max": (2304, INT_MAX),         # min_rcvbuf = SOCK_MIN_RCVBUF = 2048 + 256
    "net.core.rmem_default": (2304, INT_MAX),
    "net.core.wmem_max": (4608, INT_MAX),         # min_sndbuf = SOCK_MIN_SNDBUF = 2 * (2048 + 256)
    "net.core.wmem_default": (4608, INT_MAX),
    "net.core.somaxconn": (0, INT_MAX),           # proc_dointvec_minmax, SYSCTL_ZERO
    "net.core.netdev_max_backlog": (-INT_MAX - 1, INT_MAX),  # proc_dointvec
    "net.ipv4.tcp_rmem": (1, INT_MAX),            # proc_dointvec_minmax, SYSCTL_ONE, three values
    "net.ipv4.tcp_wmem": (1, INT_MAX),
    "net.ipv4.tcp_max_syn_backlog": (-INT_MAX - 1, INT_MAX),
    "net.ipv4.tcp_fin_timeout": (0, INT_MAX // 1000),          # proc_dointvec_jiffies (HZ up to 1000)
    "net.ipv4.tcp_keepalive_time": (0, INT_MAX // 1000),
    "net.ipv4.tcp_keepalive_intvl": (0, INT_MAX // 1000),
    "net.ipv4.tcp_keepalive_probes": (0, 255),    # proc_dou8vec_minmax
    "net.ipv4.tcp_slow_start_after_idle": (0, 1),
    "net.ipv4.tcp_mtu_probing": (0, 2),
    "net.ipv4.ip_local_port_range": (1, 65535),   # ipv4_local_port_range: two values, low <= high
    "vm.max_map_count": (0, INT_MAX),
    "kernel.sched_autogroup_enabled": (0, 1),
    "fs.file-max": (0, LONG_MAX),                 # proc_doulongvec_minmax, 0..LONG_MAX
    "fs.aio-max-nr": (0, ULONG_MAX),              # proc_doulongvec_minmax
    "fs.inotify.max_user_watches": (0, INT_MAX),  # proc_doulongvec_minmax, long_zero..INT_MAX
    "fs.inotify.max_user_instances": (0, INT_MAX),
}
ORDERED_VECTORS = {"net.ipv4.ip_local_port_range"}  # the kernel refuses low > high only here
KERNEL_BLANKS = " \t\n"  # proc_wspace_sep: what may follow a number


def kernel_reads(text: str, count: int) -> list[int] | None:
    """The integers proc_dointvec reads from `text` (base 0, as the kernel's strtoul), or None if it
    refuses: blanks, an optional '-', a number, then a blank or the end, `count` times."""
    numbers, rest = [], text
    for _ in range(count):
        rest = rest.lstrip(" \t\n\v\f\r")
        match = re.match(r"(-?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", rest)
        if not match:
            return None
        digits = match.group(2)
        value = int(digits, 16 if digits[:2].lower() == "0x" else 8 if digits.startswith("0") and len(digits) > 1 else 10)
        numbers.append(-value if match.group(1) else value)
        rest = rest[match.end():]
        if rest and rest[0] not in KERNEL_BLANKS:
            return None
    return numbers if not rest.strip(" \t\n\v\f\r") else None


def _kernel_accepts(name: str, text: str, count: int) -> list[int] | None:
    numbers = kernel_reads(text, count)
    low, high = KERNEL_RANGES[name]
    if numbers is None or not all(low <= n <= high for n in numbers):
        return None
    if name in ORDERED_VECTORS and numbers != sorted(numbers):
        return None
    return numbers


digits_and_noise = st.text(alphabet="0123456789 \t\n-+_x٣\u00a0\x1c", min_size=1, max_size=14)
knob_values = st.one_of(digits_and_noise, st.integers(-(2**64), 2**65).map(str),
                        st.lists(st.integers(0, 2**32).map(str), min_size=1, max_size=4).map(" ".join))


@pytest.mark.unit
def test_every_agent_range_lies_within_the_kernels():
    for knob in SYSCTLS:
        low, high = KERNEL_RANGES[knob.sysctl]
        assert low <= knob.check.low and knob.check.high <= high, \
            f"{knob.sysctl}: agent {knob.check.low}..{knob.check.high}, kernel {low}..{high}"


@pytest.mark.unit
@given(st.sampled_from(SYSCTLS), knob_values)
def test_a_knob_value_the_agent_accepts_is_one_the_kernel_accepts_and_reads_alike(knob, text):
    count = knob.check.count if isinstance(knob.check, IntVector) else 1
    try:
        canonical = knob.check.canonical(knob.name, text)
    except KnobRefused:
        return
    kernel = _kernel_accepts(knob.sysctl, text, count)
    assert kernel is not None, f"{knob.sysctl}: agent accepts {text!r}, the kernel refuses it"
    assert [int(n) for n in canonical.split()] == kernel, f"{knob.sysctl}: {text!r} read differently"


@pytest.mark.unit
@given(st.sampled_from([k for k in SYSCTLS if isinstance(k.check, IntRange)]), st.data())
def test_every_value_in_the_agents_range_is_accepted(knob, data):
    number = data.draw(st.integers(knob.check.low, knob.check.high))
    padding = data.draw(st.sampled_from(["", " ", "\n", "\t "]))
    assert knob.check.canonical(knob.name, f"{padding}{number}{padding}") == str(number)


# The real kernel, where safe: two knobs no test tunes, written back with the value they already have.
REAL = {"fs.aio-max-nr": "proc/sys/fs/aio-max-nr", "net.ipv4.ip_local_port_range": "proc/sys/net/ipv4/ip_local_port_range"}


@pytest.mark.host
@pytest.mark.parametrize("name", sorted(REAL))
def test_the_kernel_takes_back_its_current_value_as_the_agent_writes_it(name):
    path = Path("/") / REAL[name]
    knob = next(k for k in SYSCTLS if k.sysctl == name)
    current = path.read_text()
    try:
        canonical = knob.check.canonical(name, current)
    except KnobRefused as e:
        pytest.skip(f"this machine's {name} ({current.strip()!r}) is outside the agent's range: {e}")
    try:
        path.write_text(canonical)  # the same number(s): the kernel's state does not change
    except OSError as e:
        pytest.skip(f"{path} is not writable here: {e}")
    assert path.read_text().split() == current.split() == canonical.split()

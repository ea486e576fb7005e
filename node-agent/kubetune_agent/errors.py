"""The agent's one base exception and its small hierarchy.

    AgentError
     ├── SettingsError      a bad setting at start-up (names the environment variable)
     ├── HostPathError      a path that would leave the host root
     └── KnobError          a knob cannot be applied; ``state`` says how it is reported
          ├── KnobRefused       unknown key, bad value, bad device name: nothing is written
          └── KnobUnsupported   this node lacks the file (no cpufreq, no such device)

Messages carry the field and the reason: they end up in NodeTuning status for a user to act on.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the node agent raises on purpose."""


class SettingsError(AgentError):
    """A setting is invalid; the message names the environment variable."""


class HostPathError(AgentError):
    """A path is absolute, contains '..' or resolves outside the host root."""


class KnobError(AgentError):
    """A knob target cannot be applied."""

    state = "Refused"

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class KnobRefused(KnobError):
    """The target is not allowed: unknown key, out-of-range value, device name escaping /sys/block."""

    state = "Refused"


class KnobUnsupported(KnobError):
    """The knob is allowed but this node has no such file (no cpufreq, no such block device)."""

    state = "Unsupported"

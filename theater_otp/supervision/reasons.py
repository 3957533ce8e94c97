"""Exit reasons and the one mapping from OS-level outcomes to them.

The mapping (published in docs/supervision.md):

| OS outcome                                    | reason    |
|-----------------------------------------------|-----------|
| exit code 0 (the actor called runtime.shutdown)| normal    |
| exit code 3 (worker stopped on SIGTERM)       | shutdown  |
| killed by SIGTERM before it could handle it   | shutdown  |
| killed by SIGKILL                             | killed    |
| exit code 1 with a crash report (trap, err)   | abnormal, with the report's text |
| any other exit code or signal                 | abnormal  |
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypedDict

EXIT_NORMAL = 0
EXIT_CRASH = 1
EXIT_SHUTDOWN = 3


class ReasonKind(str, enum.Enum):
    NORMAL = "normal"
    SHUTDOWN = "shutdown"
    KILLED = "killed"
    ABNORMAL = "abnormal"


class ExitReasonPlain(TypedDict):
    """An ExitReason as the chain and the control API carry it."""

    kind: str
    detail: str


@dataclass(frozen=True)
class ExitReason:
    """Why a child (or supervisor) ended. `detail` says more, e.g. the trap text."""

    kind: ReasonKind
    detail: str = ""

    @property
    def is_normal(self) -> bool:
        """True for `normal`, `shutdown` and `{shutdown, _}`: the reasons a transient child may end with."""
        return self.kind in (ReasonKind.NORMAL, ReasonKind.SHUTDOWN)

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.detail}" if self.detail else self.kind.value

    def to_plain(self) -> ExitReasonPlain:
        return {"kind": self.kind.value, "detail": self.detail}


NORMAL = ExitReason(ReasonKind.NORMAL)
SHUTDOWN = ExitReason(ReasonKind.SHUTDOWN)
KILLED = ExitReason(ReasonKind.KILLED)


def classify_exit(returncode: int | None, crash_report: Mapping[str, object] | None = None) -> ExitReason:
    """Map a worker's exit status (Popen convention: negative = signal) to an ExitReason."""
    if returncode == EXIT_NORMAL:
        return NORMAL
    if returncode == EXIT_SHUTDOWN or returncode == -signal.SIGTERM:
        return SHUTDOWN
    if returncode == -signal.SIGKILL:
        return ExitReason(ReasonKind.KILLED, "killed by SIGKILL")
    if crash_report and crash_report.get("reason"):
        return ExitReason(ReasonKind.ABNORMAL, str(crash_report["reason"]))
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return ExitReason(ReasonKind.ABNORMAL, f"killed by {name}")
    return ExitReason(ReasonKind.ABNORMAL, f"exit code {returncode}")

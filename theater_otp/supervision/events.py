"""What the node tells a supervisor (events) and what a supervisor asks of the node (actions).

Every record names the supervisor by its tree path. `incarnation` is the
node's unique token for one start of one child (OTP's pid): an exit whose
incarnation is not the child's current one is stale and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

from ..config.model import ChildSpec, Shutdown
from .reasons import ExitReason

# ---- events: node -> supervisor -------------------------------------------------

@dataclass(frozen=True)
class Start:
    """Start the supervisor: its children, one at a time, in order."""


@dataclass(frozen=True)
class Stop:
    """The parent stops this supervisor (or the node is going down)."""

    reason: ExitReason


@dataclass(frozen=True)
class ChildStarted:
    child_id: str
    incarnation: int


@dataclass(frozen=True)
class ChildStartFailed:
    child_id: str
    reason: ExitReason


@dataclass(frozen=True)
class ChildExited:
    child_id: str
    incarnation: int
    reason: ExitReason


@dataclass(frozen=True)
class TryAgain:
    """A failed restart is retried by posting this to the supervisor itself (never a loop)."""

    child_id: str


@dataclass(frozen=True)
class BackoffElapsed:
    """The backoff delay before restarting `child_id` has passed (beyond-OTP option)."""

    child_id: str


# ---- the dynamic child API (§1.7): each request is answered with one Reply ----------

@dataclass(frozen=True)
class StartChildRequest:
    """Add and start a child. For simple_one_for_one, `spec` overrides the template's manifest only."""

    req: int
    spec: ChildSpec


@dataclass(frozen=True)
class TerminateChildRequest:
    req: int
    child_id: str


@dataclass(frozen=True)
class RestartChildRequest:
    req: int
    child_id: str


@dataclass(frozen=True)
class DeleteChildRequest:
    req: int
    child_id: str


ApiRequest = StartChildRequest | TerminateChildRequest | RestartChildRequest | DeleteChildRequest
Event = (Start | Stop | ChildStarted | ChildStartFailed | ChildExited | TryAgain | BackoffElapsed
         | StartChildRequest | TerminateChildRequest | RestartChildRequest | DeleteChildRequest)


# ---- actions: supervisor -> node ------------------------------------------------

@dataclass(frozen=True)
class StartChild:
    """Start one child; the node answers with ChildStarted or ChildStartFailed."""

    supervisor: str
    child_id: str
    spec: ChildSpec
    restart: bool  # False for the first start, True when this is a restart


@dataclass(frozen=True)
class StopChild:
    """Stop one child per `shutdown`; the node answers with ChildExited for `incarnation`."""

    supervisor: str
    child_id: str
    incarnation: int
    shutdown: Shutdown


@dataclass(frozen=True)
class Post:
    """Deliver `event` to this supervisor again after `delay` seconds."""

    supervisor: str
    event: Event
    delay: float = 0.0


@dataclass(frozen=True)
class Report:
    """One supervision decision, for the log and the supervisor's chain (style rule 11)."""

    supervisor: str
    context: str  # child_started | child_terminated | child_restarting | start_error | shutdown | ...
    child_id: str | None
    reason: ExitReason | None = None
    #: the decision's own details (incarnation, strategy, ...), each a plain value for log and chain
    data: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ChildRemoved:
    """`child_id` is no longer a child of this supervisor (a temporary child ended, delete_child,
    a simple_one_for_one instance ended): what the node keeps for its path may go."""

    supervisor: str
    child_id: str


@dataclass(frozen=True)
class SupervisorStarted:
    supervisor: str


@dataclass(frozen=True)
class SupervisorExited:
    """The supervisor has stopped all its children and is gone (start failure included)."""

    supervisor: str
    reason: ExitReason
    during_start: bool = False
    #: why: "shutdown" (asked to stop), "reached_max_restart_intensity", "auto_shutdown" or "start_failed"
    context: str = "shutdown"


class StartedValue(TypedDict):
    """What start_child and restart_child answer on success."""

    id: str
    incarnation: int | None


#: An API answer's value: StartedValue or None on success; on failure an OTP error term such as
#: "already_present", "running", "restarting", "not_found", ("already_started", incarnation),
#: ("start_failed", reason text), or a bad_combination sentence.
ReplyValue = StartedValue | str | tuple[str, int] | tuple[str, str] | None


@dataclass(frozen=True)
class Reply:
    """The answer to an API request: `ok` with a value, or not with an OTP error term (ReplyValue)."""

    supervisor: str
    req: int
    ok: bool
    value: ReplyValue = None


Action = StartChild | StopChild | Post | Report | ChildRemoved | SupervisorStarted | SupervisorExited | Reply

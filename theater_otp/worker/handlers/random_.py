"""random: random bytes, integers, floats and UUIDs, each one recorded in the chain.

(The module is `random_`, not `random`, so that it is never mistaken for the
standard library's module; its manifest type is `random`.)

Settings:

* `seed` (an integer, 0 to 2**63): the values come from a deterministic
  generator, `random.Random(f"{seed}/{path}/{incarnation}")`, where `path` is
  the actor's place in the tree (`root/dice`) and `incarnation` counts its
  starts. So the same manifest in the same tree gives the same sequence in any
  node, on any run (what tests and simulations want), while two actors with the
  same seed do not share a sequence, and a restarted actor does not repeat the
  values its previous incarnation drew (a restart that replayed the same
  "random" ids would collide with them). The actor id is not part of it: it
  is a fresh UUID in each node, which would defeat the point of a seed.
  Without `seed` the values come from the OS's CSPRNG (`secrets`).
* `max_bytes` (default 1 MiB): the most bytes one `random-bytes` call may ask
  for; a larger request is an `err` to the actor, not a crash.

`random-range(min, max)` gives an integer in [min, max) and is an `err` naming
both when min >= max; `random-float` is in [0, 1); `generate-uuid` is a
version 4 UUID as text (from the seeded generator too, when there is a seed).

Chain: every call with its result (`{"ok": value}` / `{"err": message}`), bytes
as bytes and floats as msgpack float64, so replay serves exactly what the actor
got, without a generator.
"""

from __future__ import annotations

import random
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from ...config.fields import Fields
from .. import fastabi
from .base import MAX_LIST_BYTES, FunctionTable, Handler, HostContext, HostFunction, replay_tagged, same_functions

#: The default of `max_bytes`: 1 MiB.
DEFAULT_MAX_BYTES = 1024 * 1024
#: The largest `max_bytes` a manifest may set: what one host call can copy into the guest.
MAX_MAX_BYTES = MAX_LIST_BYTES
MAX_SEED = 2**63


@dataclass(frozen=True)
class RandomSettings:
    seed: int | None = None
    max_bytes: int = DEFAULT_MAX_BYTES


class _Source:
    """Where the values come from: a seeded generator, or the OS's CSPRNG."""

    def __init__(self, seed: int | None, path: str, incarnation: int):
        if seed is None:
            self._rng: random.Random = random.SystemRandom()
            self.bytes: Callable[[int], bytes] = secrets.token_bytes
        else:
            self._rng = random.Random(f"{seed}/{path}/{incarnation}")
            self.bytes = self._rng.randbytes

    def below(self, n: int) -> int:
        return self._rng.randrange(n)

    def float(self) -> float:
        return self._rng.random()

    def uuid4(self) -> str:
        return str(uuid.UUID(bytes=self.bytes(16), version=4))


class Random(Handler):
    type = "random"
    interfaces = ("random",)
    summary = "random bytes, integers, floats and UUIDs (seeded when the manifest says so), all recorded"

    def parse_settings(self, fields: Fields) -> RandomSettings:
        seed = fields.int("seed", None, minimum=0, maximum=MAX_SEED)
        max_bytes = fields.int("max_bytes", DEFAULT_MAX_BYTES, minimum=0, maximum=MAX_MAX_BYTES)
        assert max_bytes is not None
        fields.done()
        return RandomSettings(seed, max_bytes)

    def functions(self, ctx: HostContext) -> FunctionTable:
        settings: RandomSettings = ctx.settings or RandomSettings()
        # built for replay too (cheap, and nothing is drawn from it there)
        src = _Source(settings.seed, ctx.actor.path, ctx.actor.incarnation)

        def random_bytes(size: int) -> Any:
            if size > settings.max_bytes:
                return fastabi.Err(f"random-bytes of {size} bytes is over this actor's limit of "
                                   f"{settings.max_bytes} bytes (the random handler's max_bytes)")
            return fastabi.Ok(src.bytes(size))

        def random_range(low: int, high: int) -> Any:
            if low >= high:
                return fastabi.Err(f"random-range needs min < max: min is {low}, max is {high}")
            return fastabi.Ok(low + src.below(high - low))

        table = {
            "random-bytes": HostFunction(random_bytes, replay=replay_tagged),
            "random-range": HostFunction(random_range, replay=replay_tagged),
            "random-float": HostFunction(lambda: fastabi.Ok(src.float()), replay=replay_tagged),
            "generate-uuid": HostFunction(lambda: fastabi.Ok(src.uuid4()), replay=replay_tagged),
        }
        return same_functions(table, *self.provides())


HANDLER = Random()

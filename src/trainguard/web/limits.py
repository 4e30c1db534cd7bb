"""How much password hashing a login may start: per name, per client address and in total.

Each login costs one scrypt (about 16 MiB and 50-100 ms of a core). Without a bound, a
flood of logins with made-up names keeps every core hashing and slows the page for
everyone already logged in; and a lockout checked before the hash but counted after
it lets a burst of parallel guesses all be tried. So an attempt is *reserved* under one
lock before any hashing: it counts as a failure for its name at once (a success clears
the name), and it takes a slot of its client's and of the server's bounded number of
hashes in flight. Whatever cannot get a slot is refused with 429 and a Retry-After,
without hashing anything. All of this lives in the server process (docs/review.md).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

MAX_TRACKED = 10_000  # names and addresses are attacker-chosen: tables are pruned beyond this


def _cores() -> int:
    """Cores this process may run on (not the host's count, which a container may not get)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 2


@dataclass(frozen=True)
class LoginLimits:
    max_failures: int = 5  # failed logins for one name within `window` before the name is refused
    window: float = 300.0  # seconds
    per_client: int = 2  # hashes in flight for one client address
    per_client_per_minute: int = 30  # attempts one client address may start in a minute
    in_flight: int = max(1, _cores() // 2)  # hashes in flight in the whole server: half the cores stay free
    wait: float = 1.0  # seconds an attempt may wait for a server-wide slot before it is refused


class Refused(Exception):
    """A login refused before any hashing: `message` for the user, `retry_after` in whole seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = max(1, math.ceil(retry_after))


@dataclass
class Slot:
    name: str
    client: str
    done: bool = False


class LoginLimiter:
    def __init__(self, limits: LoginLimits | None = None) -> None:
        self.limits = limits or LoginLimits()
        self._cond = threading.Condition()
        self._fails: dict[str, deque[float]] = defaultdict(deque)
        self._starts: dict[str, deque[float]] = defaultdict(deque)
        self._client_busy: dict[str, int] = defaultdict(int)
        self._busy = 0

    def reserve(self, name: str, client: str) -> Slot:
        """Take the right to hash one password for `name`, or raise `Refused`; pair with `finish`."""
        lim = self.limits
        with self._cond:
            self._prune(time.monotonic())
            self._check(name, client)  # fail fast, before waiting for a slot
            if self._client_busy[client] >= lim.per_client:
                raise Refused("another login from your address is still being checked; try again", 1)
            self._client_busy[client] += 1  # waiting for a server-wide slot counts against the client too
            try:
                if not self._cond.wait_for(lambda: self._busy < lim.in_flight, timeout=lim.wait):
                    raise Refused("the server is busy checking other logins; try again in a moment", 1)
                fails, starts = self._check(name, client)  # again: others may have failed while this one waited
            except BaseException:
                self._release_client(client)
                raise
            self._busy += 1
            now = time.monotonic()
            fails.append(now)  # counted as failed until it succeeds: parallel guesses see each other
            starts.append(now)
            return Slot(name, client)

    def _check(self, name: str, client: str) -> tuple[deque[float], deque[float]]:
        """Refuse a locked-out name or a client over its rate; call with the lock held."""
        lim, now = self.limits, time.monotonic()
        fails = _recent(self._fails, name, now, lim.window)
        if len(fails) >= lim.max_failures:
            raise Refused("too many failed logins for this name; wait a few minutes",
                          lim.window - (now - fails[-lim.max_failures]))
        starts = _recent(self._starts, client, now, 60.0)
        if len(starts) >= lim.per_client_per_minute:
            raise Refused("too many logins from your address; wait a minute", 60.0 - (now - starts[0]))
        return fails, starts

    def finish(self, slot: Slot, ok: bool) -> None:
        """The hash is done: free the slot; a success clears the name's failures."""
        with self._cond:
            if slot.done:
                return
            slot.done = True
            self._busy -= 1
            self._release_client(slot.client)
            if ok:
                self._fails.pop(slot.name, None)
            self._cond.notify_all()

    def _release_client(self, client: str) -> None:
        self._client_busy[client] -= 1
        if self._client_busy[client] <= 0:
            del self._client_busy[client]

    def _prune(self, now: float) -> None:
        for table, age in ((self._fails, self.limits.window), (self._starts, 60.0)):
            if len(table) > MAX_TRACKED:
                for key in [k for k, v in table.items() if not v or now - v[-1] >= age]:
                    del table[key]


def _recent(table: dict[str, deque[float]], key: str, now: float, age: float) -> deque[float]:
    q = table[key]
    while q and now - q[0] >= age:
        q.popleft()
    return q

"""The local server's open connections: how many it keeps, in all and per client address, and which one makes room.

A connection costs the process a file descriptor. Without a bound, clients that open connections and then send
nothing, or a body one byte at a time, use them all up: new clients are turned away by the kernel and the process
itself can no longer open a file (the model watcher fails with EMFILE). So the server keeps at most `limit`
connections (fewer than it may open files, to keep a reserve for its own) and at most `per_address` from one
client address. When a new connection would exceed either, it takes the place of an open one that is not being
answered: first the one whose request has been waiting longest for its next byte, then the keep-alive connection
idle the longest. A connection whose whole request has arrived is never closed for another; only when every one
in the way is being answered is the new connection refused (503). The slow ones are what gets closed: a client
that sends its request at a normal pace, /health included, is served however many slow ones there are.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Protocol

try:
    import resource
except ImportError:  # Windows: no limit on open files to read or raise
    resource = None  # type: ignore[assignment]

# File descriptors kept for the process's own use beyond its connections: the model's files, the storage (S3's
# connection pool), logs, the login threads, and the listening socket.
FD_RESERVE = 128
# Below this, the limit on open files leaves too little for connections to be worth capping by it.
MIN_CONNECTIONS = 16
# Connections closed or refused are logged in one line per this many seconds, not one line each (a flood of them
# would otherwise flood the log).
TALLY_SECONDS = 10.0


class Connection(Protocol):
    """What the registry needs of a connection (the server's protocol object)."""

    address: str

    def make_room(self) -> None:
        """Close this connection to admit another (answering 503 to a request partly received)."""


class _Group:
    """The connections of one scope (all, or one address): those waiting for their request's bytes (oldest news
    first), those idle between requests (idle longest first), and how many there are in all."""

    __slots__ = ("count", "idle", "waiting")

    def __init__(self) -> None:
        self.waiting: OrderedDict[Connection, None] = OrderedDict()
        self.idle: OrderedDict[Connection, None] = OrderedDict()
        self.count = 0

    def victim(self) -> Connection | None:
        for queue in (self.waiting, self.idle):
            if queue:
                return next(iter(queue))
        return None

    def wait(self, conn: Connection) -> None:
        self.idle.pop(conn, None)
        self.waiting[conn] = None
        self.waiting.move_to_end(conn)

    def rest(self, conn: Connection) -> None:
        self.waiting.pop(conn, None)
        self.idle[conn] = None

    def hold(self, conn: Connection) -> None:
        self.waiting.pop(conn, None)
        self.idle.pop(conn, None)


class Tally:
    """Counts of connections closed or refused for the limits, logged as they start, then in one line per
    TALLY_SECONDS at most (with the top addresses): a flood of them must not flood the log."""

    def __init__(self, logger: logging.Logger, schedule: Callable[[float, Callable[[], None]], object]) -> None:
        self.logger = logger
        self.schedule = schedule  # the event loop's call_later
        self.events: Counter[str] = Counter()
        self.addresses: Counter[str] = Counter()
        self.last = float("-inf")  # when the last line was logged
        self.pending = False

    def count(self, event: str, address: str) -> None:
        """One more event (e.g. "new connections refused (503)") for a connection from address."""
        self.events[event] += 1
        self.addresses[address] += 1
        wait = self.last + TALLY_SECONDS - time.monotonic()
        if wait <= 0:
            self.flush()
        elif not self.pending:
            self.pending = True
            self.schedule(wait, self.flush)

    def flush(self) -> None:
        """Log what was counted since the last line, if anything."""
        self.pending = False
        if not self.events:
            return
        what = ", ".join(f"{n} {event}" for event, n in sorted(self.events.items()))
        top = ", ".join(f"{address} ({n})" for address, n in self.addresses.most_common(3))
        self.logger.warning("connection limits: %s; from %s", what, top)
        self.events.clear()
        self.addresses.clear()
        self.last = time.monotonic()


class Registry:
    """The open connections of one server, with its limits (see the module's docstring)."""

    def __init__(self, limit: int, per_address: int, tally: Tally) -> None:
        self.limit = limit
        self.per_address = per_address
        self.tally = tally
        self.all = _Group()
        self.by_address: dict[str, _Group] = {}
        self._group_of: dict[Connection, _Group] = {}  # every registered connection and its address's group

    def admit(self, conn: Connection) -> str | None:
        """Register a new connection, closing a slow one if a limit is reached; the reason it must be refused
        instead, or None."""
        group = self.by_address.get(conn.address)
        if group is not None and group.count >= self.per_address:
            victim = group.victim()
            if victim is None:
                return f"too many open connections from this address (the limit is {self.per_address})"
            self._evict(victim)
        if self.all.count >= self.limit:
            victim = self.all.victim()
            if victim is None:
                return f"the server is at its limit of {self.limit} open connections"
            self._evict(victim)
        group = self.by_address.get(conn.address)
        if group is None:
            group = self.by_address[conn.address] = _Group()
        self._group_of[conn] = group
        for scope in (self.all, group):
            scope.count += 1
            scope.wait(conn)
        return None

    def _evict(self, victim: Connection) -> None:
        self.remove(victim)  # at once: its transport only reports the loss on a later turn of the loop
        self.tally.count("slow connections closed to make room (503)", victim.address)
        victim.make_room()

    def waiting(self, conn: Connection) -> None:
        """Bytes of a request arrived on conn: it may make room, once the connections waiting longer have."""
        group = self._group_of.get(conn)
        if group is not None:
            self.all.wait(conn)
            group.wait(conn)

    def answering(self, conn: Connection) -> None:
        """conn's whole request has arrived: it is not closed for another until it is answered."""
        group = self._group_of.get(conn)
        if group is not None:
            self.all.hold(conn)
            group.hold(conn)

    def answered(self, conn: Connection) -> None:
        """conn's answer is sent and it waits for a next request (keep-alive)."""
        group = self._group_of.get(conn)
        if group is not None:
            self.all.rest(conn)
            group.rest(conn)

    def remove(self, conn: Connection) -> None:
        """conn is closed (or about to be): forget it."""
        group = self._group_of.pop(conn, None)
        if group is None:
            return
        for scope in (self.all, group):
            scope.count -= 1
            scope.hold(conn)
        if group.count == 0:
            del self.by_address[conn.address]

    def __len__(self) -> int:
        return self.all.count


def raise_file_limit() -> int | None:
    """Raise this process's soft limit on open files to its hard limit where allowed; the soft limit after (None
    where there is none to read, or it is unlimited)."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # macOS refuses more than its OPEN_MAX: keep what we have
            pass
    return None if soft == resource.RLIM_INFINITY else soft


def connection_limit(max_connections: int, open_files: int | None) -> int:
    """The most connections to keep open: max_connections, or fewer when the limit on open files (open_files; None
    for none) would not leave FD_RESERVE for the rest of the process."""
    if open_files is None:
        return max_connections
    return max(MIN_CONNECTIONS, min(max_connections, open_files - FD_RESERVE))

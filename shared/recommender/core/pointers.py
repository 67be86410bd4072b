"""The ACTIVE and STAGED pointers of each kind: reading them (a damaged one said so, with its repair), and moving
them by compare-and-swap so that no command's move, and no version of the rollback history, is lost."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from recommender.core.errors import Conflict, NotFound, PointerDamaged
from recommender.core.storage import Storage
from recommender.core.version_layout import MODELS, PLAIN_NAME, Kind, utcnow

# Compare-and-swap rounds a pointer move tries before it gives up. A round is lost only when another command's move
# succeeded meanwhile, so this many commands at once can all get through.
MOVE_ATTEMPTS = 50


@dataclass(frozen=True)
class Pointer:
    """Which version a pointer names, and the versions it named before (newest first)."""

    version: str
    previous: tuple[str, ...] = ()


def read_pointer(storage: Storage, key: str, kind: Kind = MODELS) -> Pointer | None:
    """The pointer stored at key (ACTIVE or STAGED of some kind), or None when there is none; PointerDamaged
    (saying how to repair it) when the key holds something else."""
    try:
        return parse_pointer(storage.read(key), storage, key, kind)
    except NotFound:
        return None


def parse_pointer(data: bytes, storage: Storage, key: str, kind: Kind) -> Pointer:
    """The pointer in data, read from key; PointerDamaged (saying how to repair it) when it is not one."""
    try:
        raw = json.loads(data)
        version, previous = raw["version"], raw.get("previous", [])
        if (
            not isinstance(version, str)
            or not PLAIN_NAME.fullmatch(version)
            or not isinstance(previous, list)
            or not all(isinstance(v, str) and PLAIN_NAME.fullmatch(v) for v in previous)
        ):
            raise ValueError(key)
    except (ValueError, KeyError, TypeError, AttributeError):
        what = "empty" if not data.strip() else "not a pointer"
        fix = kind.none_active.format(url=storage.url).split(": ", 1)[-1]
        raise PointerDamaged(f"{key} in {storage.url} is damaged ({what}): {fix} to write a new one") from None
    return Pointer(version, tuple(previous))


def note(message: str) -> None:
    """Tell the operator something they should know about a pointer move (on stderr, as one line)."""
    print(f"note: {message}", file=sys.stderr)


def move_pointer(
    storage: Storage,
    key: str,
    decide: Callable[[Pointer | None], Pointer],
    stamp: str,
    now: Callable[[], datetime] = utcnow,
    kind: Kind = MODELS,
    notify: Callable[[str], None] = note,
) -> Pointer:
    """Set the pointer at key to decide(current pointer), as a compare-and-swap: the write applies only if the
    pointer is still what decide saw (an S3 conditional write, or a lock and an atomic rename on disk). When another
    command moved it in between, decide is asked again with the new one (it may raise to give up), so no command's
    move, and no version of the rollback history, is ever lost. A damaged pointer counts as none, and is replaced.
    stamp names the time field ("activated_at", "staged_at")."""
    written, pointer = None, None
    for _ in range(MOVE_ATTEMPTS):
        damaged = False
        try:
            data, tag = storage.read_tagged(key)
        except NotFound:
            data, tag, current = None, None, None
        else:
            if data == written and pointer is not None:
                return pointer  # the previous round went through, though its answer was lost (and retried: 412)
            try:
                current = parse_pointer(data, storage, key, kind)
            except PointerDamaged:
                damaged, current = True, None
        pointer = decide(current)
        body: dict = {"version": pointer.version}
        if stamp == "activated_at":
            body["previous"] = list(pointer.previous)
        body[stamp] = now().isoformat(timespec="seconds")
        written = json.dumps(body, indent=1).encode()
        if storage.write_if(key, written, tag):
            if damaged:
                notify(
                    f"{key} in {storage.url} was damaged and is replaced; the {kind.noun} versions it named "
                    f"before are no longer in the rollback history"
                )
            return pointer
    raise Conflict(
        f"{key} in {storage.url} kept changing while this command tried to move it; it changed nothing: try again"
    )


def write_pointer(
    storage: Storage, key: str, pointer: Pointer, stamp: str, now: Callable[[], datetime] = utcnow, kind: Kind = MODELS
) -> None:
    """Set the pointer at key to exactly pointer, whatever it named before (through move_pointer's compare-and-swap,
    so it never slips between another command's read and write)."""
    move_pointer(storage, key, lambda _current: pointer, stamp, now, kind)


def active(storage: Storage, kind: Kind = MODELS) -> Pointer | None:
    """The active pointer, or None when nothing was ever activated."""
    return read_pointer(storage, kind.active, kind)


def staged(storage: Storage, kind: Kind = MODELS) -> Pointer | None:
    """The staged pointer, or None when nothing waits."""
    return read_pointer(storage, kind.staged, kind)


def active_version(storage: Storage, kind: Kind = MODELS) -> str:
    """The version to serve; kind.error (saying how to get one) when none is active."""
    pointer = active(storage, kind)
    if pointer is None:
        raise kind.error(kind.none_active.format(url=storage.url))
    return pointer.version

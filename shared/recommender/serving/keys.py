"""API keys: scoped, optionally origin-bound credentials for shops, stored as SHA-256 hashes beside the users.

A key is `rk_pub_<43 random characters>` when it lists origins (a browser key, meant to sit in a shop's pages) and
`rk_sec_<...>` when it does not (a server key, never to reach a browser). The key itself is shown once, by add_key;
the storage keeps `keys/<name>.json` with its SHA-256 (256 random bits need no slow hash: a lookup is a dict hit)
and `keys/used/<name>.json` with when a serving process last saw it. Records are created with `create` and removed
with `delete_if` on the content read, so concurrent changes of one key fail with one line and change nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from recommender.core.errors import (
    AlreadyExists,
    AuthError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    StorageError,
    TooManyRequests,
)
from recommender.core.storage import Storage

log = logging.getLogger("recommender")

KEYS_PREFIX = "keys/"
USED_PREFIX = "keys/used/"
KEY_PREFIX = "rk_"
BROWSER_PREFIX = "rk_pub_"
SERVER_PREFIX = "rk_sec_"
# What each scope opens; every other route needs a user's token.
SCOPES = {"recommend": ("/send_data", "/recommendations", "/items"), "events": ("/events",)}
ALL_SCOPES = frozenset(SCOPES)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ORIGIN_RE = re.compile(r"(https?)://([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
# A key's "last used" is written at most this often per key and serving process.
LAST_USED_SECONDS = 60.0
MAX_RATE = 1_000_000.0


@dataclass(frozen=True)
class ApiKey:
    """What the storage keeps about a key (never the key itself)."""

    name: str
    scopes: frozenset[str]
    origins: tuple[str, ...]
    rate: float
    created_at: str
    sha256: str
    prefix: str  # the key's first characters, to recognise it in a list ("rk_pub_Ab12")

    @property
    def kind(self) -> str:
        """ "browser" for a key bound to origins, "server" otherwise."""
        return "browser" if self.origins else "server"


@dataclass(frozen=True)
class KeyInfo:
    """A key as `make keys` lists it."""

    key: ApiKey
    last_used: str | None


@dataclass(frozen=True)
class Caller:
    """Who is making a request: a user (with every scope, no rate limit) or an API key."""

    kind: str  # "user" or "key"
    name: str
    scopes: frozenset[str]
    rate: float | None = None


def hash_key(key: str) -> str:
    """The SHA-256 a key is stored and looked up by."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _record_key(name: str) -> str:
    # Names are case-insensitive, as user names are.
    return f"{KEYS_PREFIX}{name.lower()}.json"


def validate_name(name: str) -> str:
    """The key name, or InvalidInput when a storage key or a listing cannot carry it."""
    if not NAME_RE.fullmatch(name or ""):
        raise InvalidInput(
            f"invalid key name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def parse_scopes(scopes: str | Iterable[str]) -> frozenset[str]:
    """Scope names from "recommend,events" (commas or spaces) or a list; InvalidInput for none or an unknown one."""
    names = scopes.replace(",", " ").split() if isinstance(scopes, str) else [s.strip() for s in scopes]
    chosen = frozenset(n.lower() for n in names if n)
    if not chosen:
        raise InvalidInput(f"no scope given: choose from {', '.join(sorted(SCOPES))} (SCOPES=recommend,events)")
    unknown = sorted(chosen - ALL_SCOPES)
    if unknown:
        raise InvalidInput(f"unknown scope {unknown[0]!r}: the scopes are {', '.join(sorted(SCOPES))}")
    return chosen


def normalize_origin(origin: str) -> str:
    """An origin as browsers send it (scheme://host[:port], lower case, no default port); InvalidInput otherwise."""
    text = origin.strip().lower().removesuffix("/")
    match = _ORIGIN_RE.fullmatch(text)
    if match is None:
        raise InvalidInput(
            f"{origin!r} is not an origin: give scheme://host[:port], e.g. https://shop.example.com "
            "(http or https, no path, no wildcard)"
        )
    scheme, host, port = match.group(1), match.group(2), match.group(4)
    if port is not None and (not 0 < int(port) < 65536):
        raise InvalidInput(f"{origin!r} has a port outside 1-65535")
    return f"{scheme}://{host}" + (f":{int(port)}" if port and port != _DEFAULT_PORTS[scheme] else "")


def parse_origins(origins: str | Iterable[str]) -> tuple[str, ...]:
    """Origins from "https://a.example,https://b.example" (commas or spaces) or a list, normalized and deduplicated."""
    names = origins.replace(",", " ").split() if isinstance(origins, str) else list(origins)
    return tuple(dict.fromkeys(normalize_origin(o) for o in names if o.strip()))


def validate_rate(rate: float) -> float:
    """The rate (requests per second), or InvalidInput unless it is a number above 0."""
    if not isinstance(rate, int | float) or not math.isfinite(rate) or not 0 < rate <= MAX_RATE:
        raise InvalidInput(f"the rate must be a number of requests per second above 0 and at most {MAX_RATE:g}")
    return float(rate)


def add_key(
    storage: Storage,
    name: str,
    scopes: str | Iterable[str],
    origins: str | Iterable[str] = (),
    rate: float = 50.0,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> tuple[ApiKey, str]:
    """Create a key; its record and the key itself, which nothing keeps: show it once. AlreadyExists if the name is
    taken (atomic: of concurrent adds of one name exactly one wins)."""
    validate_name(name)
    chosen, listed, rate = parse_scopes(scopes), parse_origins(origins), validate_rate(rate)
    key = (BROWSER_PREFIX if listed else SERVER_PREFIX) + secrets.token_urlsafe(32)
    record = ApiKey(name, chosen, listed, rate, now().isoformat(timespec="seconds"), hash_key(key), key[:11])
    if not storage.create(_record_key(name), _dump(record)):
        raise AlreadyExists(f"a key named {name!r} already exists (make revoke_key NAME={name} first)")
    # A stamp a serving process wrote for an earlier key of this name after its revocation is not this key's.
    storage.delete(f"{USED_PREFIX}{name.lower()}.json")
    return record, key


def _dump(record: ApiKey) -> bytes:
    return json.dumps(
        {
            "name": record.name,
            "scopes": sorted(record.scopes),
            "origins": list(record.origins),
            "rate": record.rate,
            "created_at": record.created_at,
            "sha256": record.sha256,
            "prefix": record.prefix,
        },
        indent=1,
    ).encode()


def _parse(storage: Storage, key: str, data: bytes) -> ApiKey:
    try:
        raw = json.loads(data)
        return ApiKey(
            str(raw["name"]),
            frozenset(raw["scopes"]) & ALL_SCOPES,
            tuple(raw.get("origins", ())),
            float(raw["rate"]),
            str(raw.get("created_at", "")),
            str(raw["sha256"]),
            str(raw.get("prefix", "")),
        )
    except (ValueError, KeyError, TypeError):
        raise StorageError(f"the API key record {key} in {storage.url} is damaged") from None


def _record_names(storage: Storage) -> list[str]:
    # keys/<name>.json only: keys/used/... are the last-used stamps.
    return [k for k in storage.list(KEYS_PREFIX) if k.endswith(".json") and "/" not in k[len(KEYS_PREFIX) :]]


def list_keys(storage: Storage) -> list[KeyInfo]:
    """Every key, by name, with when a serving process last reported it used (never the key)."""
    found = []
    for key in _record_names(storage):
        try:
            record = _parse(storage, key, storage.read(key))
        except NotFound:
            continue  # revoked meanwhile
        try:
            last_used = json.loads(storage.read(f"{USED_PREFIX}{record.name.lower()}.json")).get("last_used")
        except (NotFound, ValueError, AttributeError):
            last_used = None
        found.append(KeyInfo(record, last_used))
    return sorted(found, key=lambda info: info.key.name.lower())


def revoke_key(storage: Storage, name: str) -> ApiKey:
    """Delete a key (serving processes refuse it within MODEL_POLL_SECONDS); NotFound if there is none, Conflict if
    another command changed it meanwhile (then nothing changed)."""
    validate_name(name)
    key = _record_key(name)
    try:
        data, tag = storage.read_tagged(key)
    except NotFound:
        raise NotFound(f"no API key named {name!r} (make keys lists them)") from None
    record = _parse(storage, key, data)
    if not storage.delete_if(key, tag):
        raise Conflict(f"the key {name!r} was changed by another command meanwhile; nothing was revoked: try again")
    storage.delete(f"{USED_PREFIX}{name.lower()}.json")
    return record


class KeyCache:
    """The keys a serving process accepts, re-read at most every poll_seconds, with each key's request budget.

    Looking a key up costs one SHA-256 and a dict hit: an unknown key never reads the storage, so guessing keys
    cannot load it. Revoked keys are refused, and new ones accepted, within poll_seconds.
    """

    def __init__(
        self,
        storage: Storage,
        poll_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.storage = storage
        self.poll = poll_seconds
        self.clock = clock
        self.wall = wall
        self._by_hash: dict[str, tuple[ApiKey, Caller]] = {}
        self._origins: dict[str, frozenset[str]] = {}
        self._checked: float | None = None
        self._lock = threading.Lock()
        self.buckets = Buckets(clock)
        self._reported: dict[str, float] = {}

    def due(self) -> bool:
        """Whether the keys should be read again (so async callers can move refresh off the event loop)."""
        return self._checked is None or self.clock() - self._checked >= self.poll

    def refresh(self) -> None:
        """Read every key record again if due; StorageError only when no keys were ever read (otherwise the keys
        read last keep serving, and the storage is tried again after poll_seconds)."""
        with self._lock:  # concurrent callers wait for one read, then find it done
            if not self.due():
                return
            try:
                records = []
                for key in _record_names(self.storage):
                    try:
                        data = self.storage.read(key)
                    except NotFound:
                        continue  # revoked between the listing and the read
                    try:
                        records.append(_parse(self.storage, key, data))
                    except StorageError as err:  # one damaged record refuses its own key, not every key
                        log.warning("%s: ignored", err.message)
            except StorageError as err:
                if self._checked is None:
                    raise
                log.warning("API keys not re-read (%s); serving the keys read before", err.message)
                self._checked = self.clock()
                return
            self._by_hash = {r.sha256: (r, Caller("key", r.name, r.scopes, r.rate)) for r in records}
            self._origins = {
                scope: frozenset(o for r in records if scope in r.scopes for o in r.origins) for scope in SCOPES
            }
            self._checked = self.clock()

    def origins(self, scope: str) -> frozenset[str]:
        """Every origin some key with scope lists (what a CORS preflight, which carries no key, is answered for)."""
        return self._origins.get(scope, frozenset())

    def check(self, key: str, scope: str, origin: str | None, path: str) -> Caller:
        """The caller a key names, if it may call path (of scope) from origin now; AuthError for an unknown or
        revoked key, Forbidden for a missing scope or an origin it does not list, TooManyRequests over its rate."""
        hit = self._by_hash.get(hash_key(key.strip()))
        if hit is None:
            raise AuthError(
                "unknown or revoked API key (make keys lists the keys; a revoked key stops working within "
                "MODEL_POLL_SECONDS)"
            )
        found, caller = hit
        if scope not in found.scopes:
            raise Forbidden(
                f"the API key {found.name!r} has no {scope!r} scope, which {path} needs "
                f"(it has: {', '.join(sorted(found.scopes))})"
            )
        if found.origins:
            if origin is None:
                raise Forbidden(
                    f"the API key {found.name!r} is a browser key: it answers only requests from its origins "
                    f"({', '.join(found.origins)}), and this one carries no Origin header"
                )
            if origin not in found.origins:
                raise Forbidden(
                    f"origin {origin[:200]} is not listed for the API key {found.name!r} "
                    f"(listed: {', '.join(found.origins)})"
                )
        elif origin is not None:
            raise Forbidden(
                f"the API key {found.name!r} is a server key (rk_sec_) and this request comes from a browser "
                f"(Origin {origin[:200]}): keep server keys out of web pages; make a browser key with ORIGINS="
            )
        wait = self.buckets.take(found.name, found.rate)
        if wait is not None:
            raise TooManyRequests(
                f"the API key {found.name!r} is over its rate of {found.rate:g} requests/s: retry after {wait} s", wait
            )
        self._report_use(found.name)
        return caller

    def _report_use(self, name: str) -> None:
        now = self.clock()
        last = self._reported.get(name)
        if last is not None and now - last < LAST_USED_SECONDS:
            return
        self._reported[name] = now
        # Off the request path, at most once a minute per key: a short thread rather than a pool that would
        # outlive the cache. On Lambda it may finish during the container's next invocation.
        threading.Thread(target=self._write_used, args=(name, self.wall()), daemon=True).start()

    def _write_used(self, name: str, at: datetime) -> None:
        try:
            stamp = json.dumps({"last_used": at.isoformat(timespec="seconds")}).encode()
            self.storage.write(f"{USED_PREFIX}{name.lower()}.json", stamp)
        except Exception as err:  # advisory only: a failed stamp must never fail or slow a request
            log.warning("could not record when the API key %r was last used: %s", name, err)


class Buckets:
    """A token bucket per key name, in this process: rate requests a second, bursts of up to one second's worth."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._state: dict[str, list[float]] = {}  # name -> [tokens, at]
        self._lock = threading.Lock()

    def take(self, name: str, rate: float) -> int | None:
        """None if a request may go now (and count it), else the whole seconds to wait before the next one."""
        capacity = max(1.0, rate)
        now = self.clock()
        with self._lock:
            state = self._state.get(name)
            if state is None:
                state = self._state[name] = [capacity, now]
            tokens = min(capacity, state[0] + (now - state[1]) * rate)
            state[1] = now
            if tokens >= 1.0:
                state[0] = tokens - 1.0
                return None
            state[0] = tokens
            return max(1, math.ceil((1.0 - tokens) / rate))

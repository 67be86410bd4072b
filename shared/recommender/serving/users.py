"""API users: one record per user in the storage, passwords bcrypt-hashed, never stored or logged in clear."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING

from recommender.core.errors import AlreadyExists, AuthError, Conflict, InvalidInput, NotFound, StorageError
from recommender.core.storage import Storage

if TYPE_CHECKING:
    from passlib.context import CryptContext

USERS_PREFIX = "users/"
USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
# An address a mail client would accept: RFC 5322 "atext" before the @, DNS labels and a letters-only TLD after.
EMAIL_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
MAX_EMAIL = 254
MAX_FULL_NAME = 200
# passlib refuses longer passwords (a denial-of-service guard); add_user refuses them with a message, and a login
# with one is a wrong password, answered without hashing anything.
MAX_PASSWORD_BYTES = 4096
MIN_PASSWORD_LENGTH = 8
# What a client is told of a damaged record: not which one (that would confirm the name exists), nor where it is.
DAMAGED_RECORD = "a stored user record is damaged: the server's log says which"


@dataclass(frozen=True)
class User:
    """What the API may show about a user (and the stamp its tokens must carry, never shown)."""

    username: str
    full_name: str
    email: str
    created_at: str
    # Random, new with every account and every password change; a token is valid only with the stamp it was
    # issued under, so re-creating a user or changing a password revokes every earlier token.
    stamp: str = field(default="", repr=False)


@lru_cache(maxsize=4)
def password_context(rounds: int = 12) -> CryptContext:
    """bcrypt over SHA-256 of the password (passlib's bcrypt_sha256), so passwords over 72 bytes are not truncated."""
    # Imported here: the recommend function checks tokens, never passwords, and starts faster without it.
    from passlib.context import CryptContext

    return CryptContext(schemes=["bcrypt_sha256"], bcrypt_sha256__rounds=rounds)


def _key(username: str) -> str:
    # User names are case-insensitive: "alice" and "ALICE" are one user, kept under the lower-case key.
    return f"{USERS_PREFIX}{username.lower()}.json"


def validate_username(username: str) -> str:
    """The username, or InvalidInput if it has characters a storage key or a token cannot carry."""
    if not USERNAME_RE.fullmatch(username or ""):
        raise InvalidInput(
            f"invalid user name {username!r}: use 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )
    return username


PASSWORD_CONTROL = (
    "the password contains a control character (a newline, carriage return, tab, ...): type it again without one"
)
# Characters that change how text around them is shown without being seen themselves: the right-to-left override
# (U+202E) makes "Alice\u202eeciffO" read "AliceOffice". Zero-width (non-)joiners stay allowed: Persian and
# Indic names need them.
_JOINERS = frozenset("\u200c\u200d")


def has_control(text: str) -> bool:
    """Whether text holds a control character (C0, DEL, C1) or a line or paragraph separator."""
    return any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text)


def has_invisible(text: str) -> bool:
    """Whether text holds a format character (Unicode category Cf, other than the joiners) or a lone surrogate."""
    return any(unicodedata.category(c) in ("Cf", "Cs") and c not in _JOINERS for c in text)


def validate_password(password: str, min_length: int = MIN_PASSWORD_LENGTH) -> str:
    """The password, or InvalidInput if it is empty, shorter than min_length characters, over 4,096 bytes or holds
    a control character (a newline pasted with it would make the password one nobody can type)."""
    if not password:
        raise InvalidInput("the password is empty")
    if has_control(password):
        raise InvalidInput(PASSWORD_CONTROL)
    if len(password) < min_length:
        raise InvalidInput(f"the password is shorter than {min_length} characters (MIN_PASSWORD_LENGTH)")
    if _byte_length(password) > MAX_PASSWORD_BYTES:
        raise InvalidInput(f"the password is longer than {MAX_PASSWORD_BYTES} bytes")
    return password


def _byte_length(password: str) -> int:
    """The UTF-8 length of password; above the limit when it cannot be encoded at all (a lone surrogate)."""
    try:
        return len(password.encode("utf-8"))
    except UnicodeEncodeError:
        return MAX_PASSWORD_BYTES + 1


def _validate_profile(full_name: str, email: str) -> tuple[str, str]:
    full_name, email = full_name.strip(), email.strip()
    # Control characters (newlines, tabs, escapes) would break one-line listings and logs; format characters
    # (a right-to-left override) would show another name than the one stored.
    for what, text in ((f"the full name {full_name!r}", full_name), (f"malformed email address {email!r}:", email)):
        if has_control(text):
            raise InvalidInput(f"{what} contains control characters (newline, tab, ...)")
        if has_invisible(text):
            raise InvalidInput(f"{what} contains invisible format characters (such as a right-to-left override)")
    if len(full_name) > MAX_FULL_NAME:
        raise InvalidInput(f"the full name is longer than {MAX_FULL_NAME} characters")
    if email and (len(email) > MAX_EMAIL or not EMAIL_RE.fullmatch(email)):
        raise InvalidInput(f"malformed email address {email!r}")
    return full_name, email


def _new_stamp() -> str:
    return secrets.token_hex(8)


def add_user(
    storage: Storage,
    username: str,
    password: str,
    full_name: str = "",
    email: str = "",
    rounds: int = 12,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    min_password_length: int = MIN_PASSWORD_LENGTH,
) -> User:
    """Create a user; AlreadyExists if the name is taken in any case (atomic: of concurrent adds exactly one wins)."""
    validate_username(username)
    validate_password(password, min_password_length)
    full_name, email = _validate_profile(full_name, email)
    if _legacy_key(storage, username) is not None:
        raise AlreadyExists(f"user {username!r} already exists")
    user = User(username, full_name, email, now().isoformat(timespec="seconds"), _new_stamp())
    record = {**asdict(user), "password_hash": password_context(rounds).hash(password)}
    from recommender.serving.tokens import create_first_secret  # here: tokens imports PyJWT, needed only now

    # The first user of a store comes with its token signing secret: from then on a missing secret means a lost
    # one, and no process makes another by itself (tokens.load_secret).
    create_first_secret(storage)
    if not storage.create(_key(username), json.dumps(record, indent=1).encode()):
        raise AlreadyExists(f"user {username!r} already exists")
    return user


def _legacy_key(storage: Storage, username: str) -> str | None:
    """The key of a record written before names were case-insensitive (users/Alice.json) in any case, if any."""
    wanted = username.lower()
    for key in storage.list(USERS_PREFIX):
        name = key[len(USERS_PREFIX) : -len(".json")] if key.endswith(".json") else ""
        if name != name.lower() and name.lower() == wanted:
            return key
    return None


def _find(storage: Storage, username: str) -> tuple[str, dict]:
    key, record, _tag = _find_tagged(storage, username)
    return key, record


def _find_tagged(storage: Storage, username: str) -> tuple[str, dict, str]:
    """The key, record and storage tag of a user (for a change that applies only to the record read)."""
    validate_username(username)
    keys = [_key(username)]
    if username != username.lower():
        # A record written before names were case-insensitive lives under the case it was created with.
        keys.append(f"{USERS_PREFIX}{username}.json")
    for key in keys:
        try:
            data, tag = storage.read_tagged(key)
        except NotFound:
            continue
        return key, _parse(storage, username, data), tag
    raise NotFound(f"no user named {username!r}")


def _parse(storage: Storage, username: str, data: bytes) -> dict:
    try:
        record = json.loads(data)
    except ValueError:
        raise StorageError(
            f"the record of user {username!r} in {storage.url} is damaged (not JSON)", public=DAMAGED_RECORD
        ) from None
    if not isinstance(record, dict) or not isinstance(record.get("username"), str):
        raise StorageError(
            f"the record of user {username!r} in {storage.url} is damaged (no user name)", public=DAMAGED_RECORD
        )
    return record


def _user(record: dict) -> User:
    return User(
        record["username"],
        record.get("full_name", ""),
        record.get("email", ""),
        record.get("created_at", ""),
        record.get("stamp", ""),
    )


def get_user(storage: Storage, username: str) -> User:
    """The user named username (in any case); NotFound otherwise."""
    return _user(_find(storage, username)[1])


def _changed_meanwhile(username: str, doing: str) -> Conflict:
    return Conflict(
        f"user {username!r} was changed or deleted by another command while {doing}; nothing was changed: "
        "look at the user (make list_users) and try again"
    )


def delete_user(storage: Storage, username: str) -> None:
    """Remove a user; NotFound if there is none by that name, Conflict if its record changed since it was read."""
    key, _record, tag = _find_tagged(storage, username)
    if not storage.delete_if(key, tag):
        raise _changed_meanwhile(username, "it was being deleted")


def change_password(
    storage: Storage, username: str, password: str, rounds: int = 12, min_password_length: int = MIN_PASSWORD_LENGTH
) -> User:
    """Set a new password and a new stamp, which revokes every token issued before; NotFound if no such user.

    The record is replaced only if it is still the one read before hashing (which takes a while on purpose): a
    deletion or another change meanwhile wins, and this raises Conflict having changed nothing.
    """
    validate_password(password, min_password_length)
    key, record, tag = _find_tagged(storage, username)
    record.update(password_hash=password_context(rounds).hash(password), stamp=_new_stamp())
    if not storage.write_if(key, json.dumps(record, indent=1).encode(), tag):
        raise _changed_meanwhile(username, "its password was being hashed")
    return _user(record)


def list_users(storage: Storage) -> list[User]:
    """Every user, by name."""
    names = [k[len(USERS_PREFIX) : -len(".json")] for k in storage.list(USERS_PREFIX) if k.endswith(".json")]
    users = []
    for name in names:
        try:
            users.append(get_user(storage, name))
        except (NotFound, InvalidInput):
            continue  # deleted meanwhile, or a stray file
    return users


@lru_cache(maxsize=4)
def dummy_hash(rounds: int) -> str:
    """What a password is verified against when the user does not exist (a random password's hash)."""
    # So that a wrong name and a wrong password take the same time and cannot be told apart: hashed with the
    # configured rounds, like the users' own hashes.
    return password_context(rounds).hash(secrets.token_hex(16))


def authenticate(storage: Storage, username: str, password: str, rounds: int = 12) -> User:
    """The user if the password matches; AuthError (one message for every cause) otherwise. Slow on purpose."""
    refused = AuthError("incorrect username or password")
    if not password or _byte_length(password) > MAX_PASSWORD_BYTES:
        raise refused  # no stored password can be this one (add_user refuses them): nothing to hash
    try:
        record = _find(storage, username)[1]
    except (NotFound, InvalidInput):
        password_context(rounds).verify(password, dummy_hash(rounds))
        raise refused from None
    if not password_context(rounds).verify(password, record["password_hash"]):
        raise refused
    return _user(record)


class UserCache:
    """Remembers who exists for a few seconds so a token check does not read the storage on every request."""

    def __init__(self, storage: Storage, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.storage = storage
        self.ttl = ttl_seconds
        self.clock = clock
        self._seen: dict[str, tuple[float, User]] = {}
        self._lock = threading.Lock()

    def due(self, username: str) -> bool:
        """Whether get(username) would read the storage (so async callers can move it off the event loop)."""
        hit = self._seen.get(username.lower())
        return hit is None or self.clock() - hit[0] >= self.ttl

    def get(self, username: str) -> User:
        """The user, from memory when looked up less than ttl seconds ago; NotFound otherwise."""
        now, name = self.clock(), username.lower()
        hit = self._seen.get(name)
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        try:
            user = get_user(self.storage, username)
        except NotFound:
            with self._lock:
                self._seen.pop(name, None)
            raise
        with self._lock:
            self._seen[name] = (now, user)
        return user

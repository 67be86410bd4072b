"""API users: one record per user in the storage, passwords bcrypt-hashed, never stored or logged in clear."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Callable

from recommender.core.errors import AlreadyExists, AuthError, InvalidInput, NotFound, StorageError
from recommender.core.storage import Storage

if TYPE_CHECKING:
    from passlib.context import CryptContext

USERS_PREFIX = "users/"
USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


@dataclass(frozen=True)
class User:
    """What the API may show about a user."""

    username: str
    full_name: str
    email: str
    created_at: str


def password_context(rounds: int = 12) -> CryptContext:
    """bcrypt over SHA-256 of the password (passlib's bcrypt_sha256), so passwords over 72 bytes are not truncated."""
    # Imported here: the recommend function checks tokens, never passwords, and starts faster without it.
    from passlib.context import CryptContext

    return CryptContext(schemes=["bcrypt_sha256"], bcrypt_sha256__rounds=rounds)


def _key(username: str) -> str:
    return f"{USERS_PREFIX}{username}.json"


def validate_username(username: str) -> str:
    """The username, or InvalidInput if it has characters a storage key or a token cannot carry."""
    if not USERNAME_RE.fullmatch(username or ""):
        raise InvalidInput(
            f"invalid user name {username!r}: use 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )
    return username


def add_user(storage: Storage, username: str, password: str, full_name: str = "", email: str = "",
             rounds: int = 12, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> User:
    """Create a user; AlreadyExists if the name is taken (atomic: of concurrent adds exactly one wins)."""
    validate_username(username)
    if not password:
        raise InvalidInput("the password is empty")
    if email and not EMAIL_RE.fullmatch(email):
        raise InvalidInput(f"malformed email address {email!r}")
    user = User(username, full_name.strip(), email.strip(), now().isoformat(timespec="seconds"))
    record = {**asdict(user), "password_hash": password_context(rounds).hash(password)}
    if not storage.create(_key(username), json.dumps(record, indent=1).encode()):
        raise AlreadyExists(f"user {username!r} already exists")
    return user


def _record(storage: Storage, username: str) -> dict:
    validate_username(username)
    try:
        record = json.loads(storage.read(_key(username)))
    except NotFound:
        raise NotFound(f"no user named {username!r}") from None
    except ValueError:
        raise StorageError(f"the record of user {username!r} in {storage.url} is damaged (not JSON)") from None
    if not isinstance(record, dict) or not isinstance(record.get("username"), str):
        raise StorageError(f"the record of user {username!r} in {storage.url} is damaged (no user name)")
    return record


def get_user(storage: Storage, username: str) -> User:
    """The user named username; NotFound otherwise."""
    record = _record(storage, username)
    return User(record["username"], record.get("full_name", ""), record.get("email", ""), record.get("created_at", ""))


def delete_user(storage: Storage, username: str) -> None:
    """Remove a user; NotFound if there is none by that name."""
    validate_username(username)
    if not storage.delete(_key(username)):
        raise NotFound(f"no user named {username!r}")


def list_users(storage: Storage) -> list[User]:
    """Every user, by name."""
    names = [k[len(USERS_PREFIX):-len(".json")] for k in storage.list(USERS_PREFIX) if k.endswith(".json")]
    users = []
    for name in names:
        try:
            users.append(get_user(storage, name))
        except (NotFound, InvalidInput):
            continue  # deleted meanwhile, or a stray file
    return users


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    # Verified against when the user does not exist, so that a wrong name and a wrong password
    # take the same time and cannot be told apart.
    return password_context().hash(secrets.token_hex(16))


def authenticate(storage: Storage, username: str, password: str) -> User:
    """The user if the password matches; AuthError (one message for every cause) otherwise."""
    refused = AuthError("incorrect username or password")
    try:
        record = _record(storage, username)
    except (NotFound, InvalidInput):
        password_context().verify(password or "x", _dummy_hash())
        raise refused from None
    if not password or not password_context().verify(password, record["password_hash"]):
        raise refused
    return get_user(storage, username)


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
        hit = self._seen.get(username)
        return hit is None or self.clock() - hit[0] >= self.ttl

    def get(self, username: str) -> User:
        """The user, from memory when looked up less than ttl seconds ago; NotFound otherwise."""
        now = self.clock()
        hit = self._seen.get(username)
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        try:
            user = get_user(self.storage, username)
        except NotFound:
            with self._lock:
                self._seen.pop(username, None)
            raise
        with self._lock:
            self._seen[username] = (now, user)
        return user

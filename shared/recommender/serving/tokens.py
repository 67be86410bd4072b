"""Bearer tokens: the signing secret, issuing JWTs and checking them (PyJWT; bench/results/libraries.md says why
PyJWT rather than python-jose)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jwt

from recommender.core.errors import (
    AlreadyExists,
    AuthError,
    ConfigError,
    Conflict,
    NotFound,
    RecommenderError,
    StorageError,
)
from recommender.core.extras import optional
from recommender.core.settings import MIN_SECRET_BYTES, Settings
from recommender.core.storage import Storage

log = logging.getLogger("recommender")
SECRET_KEY = "secrets/jwt_secret"
SECRET_RECHECK_SECONDS = 5.0  # the least time between two looks at the stored secret
USERS_PREFIX = "users/"  # users.USERS_PREFIX, not imported: users.add_user calls create_first_secret
MIN_SECRET_LENGTH = MIN_SECRET_BYTES
# The JWS compact serialization (RFC 7515, sections 2 and 7.1): three base64url segments without padding.
_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# Times are checked here, against the caller's clock: expiry on every request (the signature only once per token),
# and iat only for its type (a token issued by another function whose clock is a second ahead stays valid).
_DECODE_OPTIONS = {"verify_exp": False, "verify_iat": False, "require": ["sub", "exp", "iat", "jti"]}


@dataclass(frozen=True)
class TokenClaims:
    """The verified content of a token."""

    username: str
    token_id: str
    issued_at: int
    expires_at: int
    stamp: str = ""  # the account's stamp when the token was issued (users.User.stamp); "" before stamps existed


class SecretMissing(ConfigError):
    """The storage has no signing secret although it had one: tokens would stop matching (HTTP 503)."""

    status_code = 503


NEW_SECRET_HINT = (
    "restore secrets/jwt_secret from a backup, set JWT_SECRET or JWT_SECRET_ARN, or make a new one with "
    "`make new_secret` (every token issued before stops working)"
)


def load_secret(settings: Settings, storage: Storage, secrets_client: Any = None) -> str:
    """The signing secret: JWT_SECRET, else the Secrets Manager secret JWT_SECRET_ARN, else the one in the storage.

    A stored secret is generated only for a store that never had one: SecretMissing when the storage has users
    (they were added with one: tokens were signed with it) or this machine saw one there, so that a new process
    never signs with a key that processes still running do not know.
    """
    if settings.jwt_secret:
        secret = settings.jwt_secret
    elif settings.jwt_secret_arn:
        if secrets_client is None:
            boto3 = optional("boto3", "JWT_SECRET_ARN")
            secrets_client = boto3.client("secretsmanager", endpoint_url=settings.aws_endpoint_url)
        try:
            secret = secrets_client.get_secret_value(SecretId=settings.jwt_secret_arn)["SecretString"]
        except Exception as err:  # botocore raises many types; all mean the same to the caller
            raise StorageError(
                f"cannot read the signing secret {settings.jwt_secret_arn}: {err}",
                public="the token signing secret cannot be read from Secrets Manager",
            ) from None
    else:
        secret = _stored_secret(settings, storage)
    if len(secret.encode()) < MIN_SECRET_LENGTH:
        raise ConfigError(f"the token signing secret is shorter than {MIN_SECRET_LENGTH} bytes")
    return secret


def _stored_secret(settings: Settings, storage: Storage) -> str:
    try:
        secret = storage.read(SECRET_KEY).decode().strip()
    except NotFound:
        if storage.list(USERS_PREFIX):
            raise SecretMissing(
                f"the token signing secret is missing from {storage.url} although it holds users (deleted?): "
                f"{NEW_SECRET_HINT}"
            ) from None
        if _seen(settings, storage) is not None:
            raise SecretMissing(
                f"the token signing secret is missing from {storage.url}, which had one (the bucket or folder "
                f"was deleted?); servers still running sign with the old one: {NEW_SECRET_HINT}"
            ) from None
        # A store that never had a secret nor users (a first run): the first process to get here makes it.
        storage.create(SECRET_KEY, new_secret().encode())
        secret = storage.read(SECRET_KEY).decode().strip()
    _remember(settings, storage, secret)
    return secret


def new_secret() -> str:
    """A new random signing secret (48 random bytes, base64url)."""
    return secrets.token_urlsafe(48)


def create_first_secret(storage: Storage) -> bool:
    """Give a store its signing secret with its first user (as one that never had either); True if made now."""
    if storage.list(USERS_PREFIX):
        return False  # it has users: a secret missing now was deleted, and only an operator may make a new one
    return storage.create(SECRET_KEY, new_secret().encode())


def replace_secret(settings: Settings, storage: Storage, replace: bool = False) -> str:
    """Write a new signing secret into the storage: only where there is none, or (replace) instead of the one read,
    atomically; AlreadyExists or Conflict otherwise. Returns "made" or "replaced"."""
    if settings.jwt_secret or settings.jwt_secret_arn:
        which = "JWT_SECRET" if settings.jwt_secret else "JWT_SECRET_ARN"
        raise ConfigError(
            f"{which} is set: tokens are signed with it, not with a secret in the storage; change it there"
        )
    try:
        _data, tag = storage.read_tagged(SECRET_KEY)
    except NotFound:
        tag = None
    if tag is not None and not replace:
        raise AlreadyExists(
            "the storage has a token signing secret already; REPLACE=1 (--replace) makes a new one, and every "
            "token issued before stops working"
        )
    secret = new_secret()
    if not storage.write_if(SECRET_KEY, secret.encode(), tag):
        raise Conflict("the token signing secret changed while this command ran; nothing was changed: try again")
    _remember(settings, storage, secret)
    return "replaced" if tag is not None else "made"


def _record(settings: Settings, storage: Storage) -> Path:
    # Kept outside the storage (whose loss it must survive), per storage: the fingerprint of its secret, never the
    # secret. In the cache folder (/tmp by default): processes that could hold an older key run since the last boot.
    name = hashlib.sha256(storage.url.encode()).hexdigest()[:24]
    return Path(settings.cache_dir) / "signing-secrets" / name


def _seen(settings: Settings, storage: Storage) -> str | None:
    try:
        return _record(settings, storage).read_text().strip() or None
    except OSError:
        return None


def _remember(settings: Settings, storage: Storage, secret: str) -> None:
    fingerprint = hashlib.sha256(secret.encode()).hexdigest()[:16]
    if _seen(settings, storage) == fingerprint:
        return
    path = _record(settings, storage)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(fingerprint + "\n")
    except OSError:
        pass  # a read-only disk: the guard against users existing without a secret still holds


class SecretHolder:
    """The signing secret of a process, looked at again in the storage every `recheck_seconds`: a secret replaced
    there (`make new_secret REPLACE=1`, or made anew after the storage was lost) is adopted, so processes agree
    again; a deleted one is never re-made by a running process, which keeps its own and logs why."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        recheck_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.storage, self.recheck, self.clock = settings, storage, recheck_seconds, clock
        self.value: str | None = None
        self._checked_at = float("-inf")
        self._stored = not (settings.jwt_secret or settings.jwt_secret_arn)
        self._missing_logged = False

    def due(self) -> bool:
        """Whether current() would read the storage (so async callers can move it off the event loop)."""
        return self.value is None or (self._stored and self.clock() - self._checked_at >= self.recheck)

    def current(self) -> str:
        """The secret to sign and check tokens with."""
        if self.value is None:
            self.value = load_secret(self.settings, self.storage)
            self._checked_at = self.clock()
        elif self.due():
            self._checked_at = self.clock()
            self._recheck()
        return self.value

    def _recheck(self) -> None:
        try:
            stored = self.storage.read(SECRET_KEY).decode().strip()
        except NotFound:
            if not self._missing_logged:
                log.error(
                    "the token signing secret was deleted from %s; this process keeps the one it has, new processes "
                    "will refuse to start: %s",
                    self.storage.url,
                    NEW_SECRET_HINT,
                )
                self._missing_logged = True
            return
        except RecommenderError as err:
            log.warning("cannot look at the token signing secret (keeping the one in use): %s", err.message)
            return
        self._missing_logged = False
        if stored != self.value and len(stored.encode()) >= MIN_SECRET_LENGTH:
            log.warning(
                "the token signing secret in %s changed: tokens signed with the old one are refused now",
                self.storage.url,
            )
            self.value = stored
            _remember(self.settings, self.storage, stored)


def issue_token(
    username: str,
    secret: str,
    algorithm: str = "HS256",
    minutes: int = 60,
    clock: Callable[[], float] = time.time,
    stamp: str = "",
) -> str:
    """A signed JWT for username carrying sub, iat, exp, a unique jti and the account's stamp (stm)."""
    now = int(clock())
    claims: dict[str, Any] = {"sub": username, "iat": now, "exp": now + minutes * 60, "jti": uuid.uuid4().hex}
    if stamp:
        claims["stm"] = stamp
    try:
        return jwt.encode(claims, secret, algorithm=algorithm)
    except jwt.InvalidKeyError:
        raise ConfigError(
            "the token signing secret looks like a PEM or SSH key; use a random text "
            "(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
        ) from None


def verify_token(
    token: str, secret: str, algorithm: str = "HS256", clock: Callable[[], float] = time.time
) -> TokenClaims:
    """The claims of a valid token; AuthError if it is malformed, forged, of another algorithm or expired."""
    claims = signed_claims(token, secret, algorithm)
    if clock() >= claims.expires_at:
        raise AuthError("token expired")
    return claims


# A client sends the same token with every request: its signature is checked once, the expiry every time.
# Refused tokens raise, and lru_cache keeps no exception, so they are checked in full each time.
@lru_cache(maxsize=4096)
def signed_claims(token: str, secret: str, algorithm: str) -> TokenClaims:
    """The claims of a token in its issued form and signed with secret (expiry not checked); AuthError otherwise."""
    if not _is_compact(token):
        raise AuthError("invalid token")
    try:
        # Only the configured algorithm is accepted, which also refuses "none".
        claims = jwt.decode(token, secret, algorithms=[algorithm], options=_DECODE_OPTIONS)
    except jwt.PyJWTError:
        raise AuthError("invalid token") from None
    sub, exp, iat, jti = claims.get("sub"), claims.get("exp"), claims.get("iat"), claims.get("jti")
    stamp = claims.get("stm", "")
    if (
        not isinstance(sub, str)
        or not isinstance(exp, int)
        or not isinstance(iat, int)
        or not isinstance(jti, str)
        or not isinstance(stamp, str)
        or isinstance(exp, bool)
        or isinstance(iat, bool)
    ):
        raise AuthError("invalid token")
    return TokenClaims(sub, jti, iat, exp, stamp)


def _is_compact(token: str) -> bool:
    """Whether token is spelled exactly as issued. Base64 decoders accept more (PyJWT takes "=" after the signature;
    others skip any character outside the alphabet, or ignore the unused low bits of the last character), so one
    token could be sent in many spellings: after the signature anything appended, in it another last character."""
    if not _COMPACT.fullmatch(token):
        return False
    signature = token.rsplit(".", 1)[1]
    try:
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except (binascii.Error, ValueError):
        return False
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == signature

"""Bearer tokens: the signing secret, issuing JWTs and checking them (PyJWT; bench/results/libraries.md says why
PyJWT rather than python-jose)."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jwt

from recommender.core.errors import AuthError, ConfigError, StorageError
from recommender.core.extras import optional
from recommender.core.settings import MIN_SECRET_BYTES, Settings
from recommender.core.storage import Storage

SECRET_KEY = "secrets/jwt_secret"
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


def load_secret(settings: Settings, storage: Storage, secrets_client: Any = None) -> str:
    """The signing secret: JWT_SECRET, else the Secrets Manager secret JWT_SECRET_ARN, else one kept in the storage.

    The stored one is created on first use with create-if-absent, so concurrent first users agree on it.
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
        storage.create(SECRET_KEY, secrets.token_urlsafe(48).encode())
        secret = storage.read(SECRET_KEY).decode().strip()
    if len(secret.encode()) < MIN_SECRET_LENGTH:
        raise ConfigError(f"the token signing secret is shorter than {MIN_SECRET_LENGTH} bytes")
    return secret


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

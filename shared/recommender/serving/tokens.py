"""Bearer tokens: the signing secret, issuing JWTs and checking them."""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from jose import JWTError, jwt

from recommender.core.errors import AuthError, ConfigError, StorageError
from recommender.core.settings import MIN_SECRET_BYTES, Settings
from recommender.core.storage import Storage

SECRET_KEY = "secrets/jwt_secret"
MIN_SECRET_LENGTH = MIN_SECRET_BYTES


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
            import boto3

            secrets_client = boto3.client("secretsmanager", endpoint_url=settings.aws_endpoint_url)
        try:
            secret = secrets_client.get_secret_value(SecretId=settings.jwt_secret_arn)["SecretString"]
        except Exception as err:  # botocore raises many types; all mean the same to the caller
            raise StorageError(f"cannot read the signing secret {settings.jwt_secret_arn}: {err}") from None
    else:
        storage.create(SECRET_KEY, secrets.token_urlsafe(48).encode())
        secret = storage.read(SECRET_KEY).decode().strip()
    if len(secret.encode()) < MIN_SECRET_LENGTH:
        raise ConfigError(f"the token signing secret is shorter than {MIN_SECRET_LENGTH} bytes")
    return secret


def issue_token(username: str, secret: str, algorithm: str = "HS256", minutes: int = 60,
                clock: Callable[[], float] = time.time, stamp: str = "") -> str:
    """A signed JWT for username carrying sub, iat, exp, a unique jti and the account's stamp (stm)."""
    now = int(clock())
    claims = {"sub": username, "iat": now, "exp": now + minutes * 60, "jti": uuid.uuid4().hex}
    if stamp:
        claims["stm"] = stamp
    return jwt.encode(claims, secret, algorithm=algorithm)


def verify_token(token: str, secret: str, algorithm: str = "HS256",
                 clock: Callable[[], float] = time.time) -> TokenClaims:
    """The claims of a valid token; AuthError if it is malformed, forged, of another algorithm or expired."""
    claims = _signed_claims(token, secret, algorithm)
    if clock() >= claims.expires_at:
        raise AuthError("token expired")
    return claims


# A client sends the same token with every request: its signature is checked once, the expiry every time.
# Refused tokens raise, and lru_cache keeps no exception, so they are checked in full each time.
@lru_cache(maxsize=4096)
def _signed_claims(token: str, secret: str, algorithm: str) -> TokenClaims:
    try:
        # Only the configured algorithm is accepted, which also refuses "none".
        claims = jwt.decode(token, secret, algorithms=[algorithm], options={"verify_exp": False, "require_sub": True})
    except JWTError:
        raise AuthError("invalid token") from None
    sub, exp, iat, jti = claims.get("sub"), claims.get("exp"), claims.get("iat"), claims.get("jti")
    stamp = claims.get("stm", "")
    if not isinstance(sub, str) or not isinstance(exp, int) or not isinstance(iat, int) or not isinstance(jti, str) \
            or not isinstance(stamp, str):
        raise AuthError("invalid token")
    return TokenClaims(sub, jti, iat, exp, stamp)

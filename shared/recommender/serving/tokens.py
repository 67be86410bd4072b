"""Bearer tokens: the signing secret, issuing JWTs and checking them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from recommender.core.errors import AuthError, ConfigError, StorageError
from recommender.core.extras import optional
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
            boto3 = optional("boto3", "JWT_SECRET_ARN")
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
    import uuid

    from jose import jwt  # only issuing needs python-jose (the auth function)

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
    # Only the configured algorithm is accepted, which also refuses "none".
    claims = _decode(token, secret, algorithm)
    if claims is None:
        raise AuthError("invalid token")
    sub, exp, iat, jti = claims.get("sub"), claims.get("exp"), claims.get("iat"), claims.get("jti")
    stamp = claims.get("stm", "")
    if not isinstance(sub, str) or not isinstance(exp, int) or not isinstance(iat, int) or not isinstance(jti, str) \
            or not isinstance(stamp, str):
        raise AuthError("invalid token")
    return TokenClaims(sub, jti, iat, exp, stamp)


# Verifying an HMAC token needs the standard library only. python-jose, which does the same for any secret, costs
# some 25 ms of imports (it loads its RSA and EC backends too), a sixth of the recommend function's cold start; it
# decodes what the fast path does not cover: secrets that python-jose would read as JSON, PEM or SSH keys.
_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
_PLAIN_SECRET = re.compile(r"[A-Za-z0-9_-]+")  # what load_secret generates and Secrets Manager's template makes
_KEY_MARKERS = ("ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp")


def _decode(token: str, secret: str, algorithm: str) -> dict | None:
    """The claims of token if python-jose's jwt.decode(token, secret, algorithms=[algorithm],
    options={"verify_exp": False, "require_sub": True}) accepts it (None if it refuses it)."""
    if algorithm not in _HASHES or not _PLAIN_SECRET.fullmatch(secret) or any(m in secret for m in _KEY_MARKERS):
        return _decode_with_jose(token, secret, algorithm)
    try:  # jose.jws._load: the last dot ends the signed part, the first one the header
        signing_input, crypto_segment = token.encode("utf-8").rsplit(b".", 1)
        header_segment, claims_segment = signing_input.split(b".", 1)
        header = json.loads(_b64decode(header_segment).decode("utf-8"))
        payload, signature = _b64decode(claims_segment), _b64decode(crypto_segment)
    except (ValueError, TypeError, binascii.Error):
        return None
    if not isinstance(header, dict) or header.get("alg") != algorithm:
        return None
    expected = hmac.new(secret.encode("utf-8"), signing_input, _HASHES[algorithm]).digest()
    if not hmac.compare_digest(signature, expected):
        return None
    try:
        claims = json.loads(payload.decode("utf-8"))
    except ValueError:
        return None
    if not isinstance(claims, dict) or "sub" not in claims or not isinstance(claims["sub"], str):
        return None
    if "aud" in claims or "at_hash" in claims:  # no audience or access token is ever given to compare against
        return None
    if "jti" in claims and not isinstance(claims["jti"], str):
        return None
    try:
        if "iat" in claims:
            int(claims["iat"])
        if "nbf" in claims and int(claims["nbf"]) > int(time.time()):
            return None
    except (ValueError, TypeError):
        return None
    return claims


def _b64decode(segment: bytes) -> bytes:
    # As python-jose's base64url_decode: padding restored, characters outside the alphabet skipped.
    return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))


def _decode_with_jose(token: str, secret: str, algorithm: str) -> dict | None:
    from jose import JWTError, jwt

    try:
        return jwt.decode(token, secret, algorithms=[algorithm], options={"verify_exp": False, "require_sub": True})
    except JWTError:
        return None

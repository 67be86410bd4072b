"""Token signing secret, issuing and verification."""

import base64
import json
import stat

import pytest
from jose import jwt
from recommender.core.errors import AuthError, ConfigError
from recommender.core.settings import Settings
from recommender.core.storage import LocalStorage
from recommender.serving.tokens import (
    SECRET_KEY,
    issue_token,
    load_secret,
    verify_token,
)

SECRET = "s" * 48


def test_round_trip_carries_the_claims():
    token = issue_token("alice", SECRET, minutes=10, clock=lambda: 1000)
    claims = verify_token(token, SECRET, clock=lambda: 1001)
    assert (claims.username, claims.issued_at, claims.expires_at) == ("alice", 1000, 1600)
    assert len(claims.token_id) == 32
    assert issue_token("alice", SECRET, clock=lambda: 1000) != issue_token("alice", SECRET, clock=lambda: 1000)


def test_expired_token_refused():
    token = issue_token("alice", SECRET, minutes=1, clock=lambda: 1000)
    with pytest.raises(AuthError, match="expired"):
        verify_token(token, SECRET, clock=lambda: 1060)


def test_wrong_secret_refused():
    with pytest.raises(AuthError):
        verify_token(issue_token("alice", SECRET), "o" * 48)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_refused():
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({'sub': 'alice', 'exp': 9999999999, 'iat': 1, 'jti': 'x'})}."
    with pytest.raises(AuthError):
        verify_token(token, SECRET)


def test_other_algorithm_refused():
    token = jwt.encode({"sub": "alice", "exp": 9999999999, "iat": 1, "jti": "x"}, SECRET, algorithm="HS512")
    with pytest.raises(AuthError):
        verify_token(token, SECRET, algorithm="HS256")


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "Bearer x"])
def test_malformed_refused(token):
    with pytest.raises(AuthError):
        verify_token(token, SECRET)


def test_secret_from_environment_wins(tmp_path):
    store = LocalStorage(tmp_path)
    assert load_secret(Settings(jwt_secret="e" * 40), store) == "e" * 40
    assert store.list("secrets/") == []


def test_generated_secret_is_kept_private_and_shared(tmp_path):
    store = LocalStorage(tmp_path)
    first = load_secret(Settings(), store)
    assert load_secret(Settings(), LocalStorage(tmp_path)) == first
    assert len(first) >= 32
    mode = (tmp_path / SECRET_KEY).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_short_secret_refused(tmp_path):
    with pytest.raises(ConfigError):
        load_secret(Settings(jwt_secret="short"), LocalStorage(tmp_path))


def test_secret_from_secrets_manager(aws_credentials, tmp_path):
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("secretsmanager")
        arn = client.create_secret(Name="jwt", SecretString="m" * 64)["ARN"]
        assert load_secret(Settings(jwt_secret_arn=arn), LocalStorage(tmp_path), client) == "m" * 64


def test_standard_library_verification_agrees_with_python_jose():
    """tokens._decode checks HMAC tokens without python-jose (its imports are a sixth of the recommend function's
    cold start): on tokens of every shape, signed or forged, it accepts exactly what jose.jwt.decode accepts."""
    import random

    from jose.exceptions import JOSEError, JWTError
    from recommender.serving.tokens import _decode

    def jose_outcome(token: str, secret: str, algorithm: str) -> bool | str:
        try:
            jwt.decode(token, secret, algorithms=[algorithm], options={"verify_exp": False, "require_sub": True})
            return True
        except JWTError:
            return False
        except TypeError:  # jose lets the TypeError of int([...]) escape; ours refuses such a token
            return False
        except JOSEError as err:  # a secret jose takes for an SSH key: it refuses to verify (ours falls back to it)
            return type(err).__name__

    def our_outcome(token: str, secret: str, algorithm: str) -> bool | str:
        try:
            return _decode(token, secret, algorithm) is not None
        except JOSEError as err:
            return type(err).__name__

    now = 2_000_000_000
    base = {"sub": "alice", "iat": 1000, "exp": now, "jti": "a" * 32, "stm": "0123456789abcdef"}
    claim_sets = [base, {**base, "aud": "x"}, {**base, "aud": []}, {**base, "nbf": 1000}, {**base, "nbf": now * 2},
                  {**base, "nbf": "12"}, {**base, "nbf": "soon"}, {**base, "iat": "1000"}, {**base, "iat": "x"},
                  {**base, "sub": 5}, {k: v for k, v in base.items() if k != "sub"}, {**base, "jti": 7},
                  {**base, "at_hash": "x"}, {**base, "iss": "elsewhere"}, {"sub": "bob"}, {**base, "iat": 1.5}]
    secrets_ = [SECRET, "Ab3_-" * 10, "1" * 40, "t" * 31 + "ssh-rsa", '{"kty": "oct", "k": "c2VjcmV0c2VjcmV0"}',
                "p@ss word with punctuation and spaces!!"]
    rng = random.Random(7)
    checked = accepted = 0
    for secret in secrets_:
        for algorithm in ("HS256", "HS384", "HS512"):
            tokens = [jwt.encode(base, "o" * 48, algorithm=algorithm)]  # another secret
            for claims in claim_sets:
                for signed_as in ("HS256", "HS384", "HS512"):
                    for headers in (None, {"typ": "JWT", "kid": "1"}):
                        try:
                            tokens.append(jwt.encode(claims, secret, algorithm=signed_as, headers=headers))
                        except JOSEError:  # jose signs with no key it takes for an SSH or PEM one
                            pass
            header = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=").decode()
            tokens.append(f"{header}.{tokens[0].split('.')[1]}.")
            for token in list(tokens[:12]):
                head, body, sig = token.split(".")
                tokens += [token + ".", token + "=", token + "!", f"{head}.{body}.{sig}.{sig}", f"{head}.{body}",
                           f"{head}.{body}.{sig[:-2]}", f"{head}.{body}.{sig}==", f"{head}.{body}!.{sig}",
                           f"{head}..{sig}", f".{body}.{sig}", "", "...", "a.b.c", token.replace(".", "", 1)]
                for _ in range(20):  # one character changed, anywhere
                    i = rng.randrange(len(token))
                    tokens.append(token[:i] + rng.choice("AaZz09-_.=!é") + token[i + 1:])
            for token in tokens:
                outcome = our_outcome(token, secret, algorithm)
                assert outcome == jose_outcome(token, secret, algorithm), (token, secret, algorithm)
                checked += 1
                accepted += outcome is True
    assert checked > 5000 and accepted > 100

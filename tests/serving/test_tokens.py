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

"""Token signing secret, issuing and verification."""

import base64
import hashlib
import hmac
import json
import shutil
import stat

import jwt
import pytest

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
CLAIMS = {"sub": "alice", "exp": 9999999999, "iat": 1, "jti": "x" * 32, "stm": "0123456789abcdef"}


def _hs256(claims: dict) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256")


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


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # a 48-byte secret for HS512
def test_other_algorithm_refused():
    token = jwt.encode({"sub": "alice", "exp": 9999999999, "iat": 1, "jti": "x"}, SECRET, algorithm="HS512")
    with pytest.raises(AuthError):
        verify_token(token, SECRET, algorithm="HS256")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "HS512", "HS384", "RS256", "ES256", "PS256", "EdDSA", ""])
def test_a_header_naming_another_algorithm_is_refused_even_when_signed_with_the_secret(alg):
    """The header's alg never chooses how the token is checked (no algorithm confusion): signed with the secret
    by HMAC-SHA256 over exactly its own text, a token whose header names anything but HS256 is refused."""
    signing_input = f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64(CLAIMS)}"
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    with pytest.raises(AuthError, match="invalid token"):
        verify_token(token, SECRET)
    assert verify_token(_hs256(CLAIMS), SECRET).username == "alice"  # the same, naming HS256, is accepted


@pytest.mark.parametrize(
    "suffix", ["=", "==", "===", ".", "..", "!", "A", "AA", "é", " ", "\n", "%3D", "\x00", ".eyJ9", "~"]
)
def test_anything_appended_to_a_token_is_refused(suffix, pyjwt_decoding):
    token = issue_token("alice", SECRET, clock=lambda: 1000)
    assert verify_token(token, SECRET, clock=lambda: 1001).username == "alice"  # now cached as valid
    with pytest.raises(AuthError, match="invalid token"):
        verify_token(token + suffix, SECRET, clock=lambda: 1001)
    with pytest.raises(AuthError, match="invalid token"):
        verify_token(suffix + token, SECRET, clock=lambda: 1001)


@pytest.fixture(params=["as installed", "lenient base64"])
def pyjwt_decoding(request, monkeypatch):
    """PyJWT as installed, and PyJWT decoding segments as leniently as its releases before 2.14 did (any character
    outside the alphabet skipped, unused bits ignored): tokens.py refuses the same either way."""
    if request.param == "lenient base64":

        def lenient(segment: bytes, name: str) -> bytes:
            try:
                return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
            except ValueError:
                raise jwt.DecodeError(f"Invalid {name} padding") from None

        monkeypatch.setattr(jwt.api_jws.PyJWS, "_decode_base64url_segment", staticmethod(lenient))
    from recommender.serving.tokens import signed_claims

    signed_claims.cache_clear()
    yield request.param
    signed_claims.cache_clear()


def test_another_spelling_of_the_signature_is_refused(pyjwt_decoding):
    """The last character of an HS256 signature carries 4 bits and 2 unused ones: a base64 decoder that ignores
    the unused bits reads 4 spellings of one signature. Only the issued one is accepted."""
    token = issue_token("alice", SECRET, clock=lambda: 1000)
    assert verify_token(token, SECRET, clock=lambda: 1001).username == "alice"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    for other in range(last - last % 4, last - last % 4 + 4):
        if other != last:
            with pytest.raises(AuthError):
                verify_token(token[:-1] + alphabet[other], SECRET, clock=lambda: 1001)


def test_expiry_is_checked_on_every_use_of_a_cached_token():
    token = issue_token("alice", SECRET, minutes=10, clock=lambda: 1000)
    assert verify_token(token, SECRET, clock=lambda: 1599).expires_at == 1600
    with pytest.raises(AuthError, match="expired"):
        verify_token(token, SECRET, clock=lambda: 1600)


@pytest.mark.parametrize(
    "claims",
    [
        {k: v for k, v in CLAIMS.items() if k != "sub"},
        {k: v for k, v in CLAIMS.items() if k != "exp"},
        {k: v for k, v in CLAIMS.items() if k != "iat"},
        {k: v for k, v in CLAIMS.items() if k != "jti"},
        {**CLAIMS, "sub": 5},
        {**CLAIMS, "exp": "9999999999"},
        {**CLAIMS, "exp": 9999999999.5},
        {**CLAIMS, "iat": "1"},
        {**CLAIMS, "jti": 7},
        {**CLAIMS, "stm": 7},
        {**CLAIMS, "aud": "elsewhere"},
        {**CLAIMS, "nbf": 9999999999},
    ],
)
def test_claims_of_the_wrong_shape_are_refused(claims):
    with pytest.raises(AuthError, match="invalid token"):
        verify_token(_hs256(claims), SECRET)


def test_a_token_issued_a_second_ahead_of_this_clock_is_valid():
    """The auth function's clock may run a little ahead of the recommend function's: iat is not compared."""
    token = issue_token("alice", SECRET, clock=lambda: 10_000)
    assert verify_token(token, SECRET, clock=lambda: 9_999).issued_at == 10_000


def test_a_secret_that_looks_like_a_key_is_a_configuration_error():
    with pytest.raises(ConfigError, match="PEM or SSH key"):
        issue_token("alice", "ssh-rsa " + "A" * 60)


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


@pytest.mark.parametrize("part", [0, 1, 2])
@pytest.mark.parametrize("char", ["+", "/", "!", "=", " ", "\n", "é", "%"])
def test_a_character_outside_base64url_in_any_part_is_refused(part, char, pyjwt_decoding):
    token = issue_token("alice", SECRET, clock=lambda: 1000)
    assert verify_token(token, SECRET, clock=lambda: 1001).username == "alice"
    parts = token.split(".")
    for spelled in (parts[part] + char, char + parts[part], parts[part][:5] + char + parts[part][5:]):
        changed = ".".join(spelled if i == part else p for i, p in enumerate(parts))
        with pytest.raises(AuthError, match="invalid token"):
            verify_token(changed, SECRET, clock=lambda: 1001)


def test_two_exclamation_marks_appended_are_refused():
    # The review's reproduction: a valid token with "!!" appended was accepted.
    token = issue_token("alice", SECRET, clock=lambda: 1000)
    with pytest.raises(AuthError, match="invalid token"):
        verify_token(token + "!!", SECRET, clock=lambda: 1001)


def test_a_missing_secret_is_not_made_again_where_users_exist(tmp_path):
    from recommender.serving.tokens import SecretMissing
    from recommender.serving.users import add_user

    store = LocalStorage(tmp_path / "store")
    add_user(store, "alice", "password-1", rounds=4)  # a first user brings the store its secret
    first = load_secret(Settings(cache_dir=str(tmp_path / "other-machine")), store)
    store.delete(SECRET_KEY)
    with pytest.raises(SecretMissing, match="missing from .* although it holds users .*make new_secret"):
        load_secret(Settings(cache_dir=str(tmp_path / "other-machine")), store)
    add_user(store, "bob", "password-2", rounds=4)  # nor by adding a user
    assert store.list("secrets/") == []
    assert first


def test_a_missing_secret_this_machine_saw_is_not_made_again(tmp_path):
    from recommender.serving.tokens import SecretMissing

    settings = Settings(cache_dir=str(tmp_path / "cache"))
    load_secret(settings, LocalStorage(tmp_path / "store"))
    shutil.rmtree(tmp_path / "store")  # the whole store is gone, users and secret alike
    with pytest.raises(SecretMissing, match="which had one"):
        load_secret(settings, LocalStorage(tmp_path / "store"))
    assert not (tmp_path / "store" / SECRET_KEY).exists()
    # Another machine, which never saw it, cannot tell: it makes one (production sets JWT_SECRET_ARN).
    assert load_secret(Settings(cache_dir=str(tmp_path / "elsewhere")), LocalStorage(tmp_path / "store"))


def test_new_secret_makes_one_only_where_none_is_or_replaces_when_asked(tmp_path):
    from recommender.core.errors import AlreadyExists
    from recommender.serving.tokens import replace_secret

    store, settings = LocalStorage(tmp_path / "store"), Settings(cache_dir=str(tmp_path / "cache"))
    assert replace_secret(settings, store) == "made"
    first = load_secret(settings, store)
    with pytest.raises(AlreadyExists, match="REPLACE=1"):
        replace_secret(settings, store)
    assert load_secret(settings, store) == first
    assert replace_secret(settings, store, replace=True) == "replaced"
    assert load_secret(settings, store) != first
    with pytest.raises(ConfigError, match="JWT_SECRET is set"):
        replace_secret(Settings(jwt_secret="e" * 40), store, replace=True)


def test_a_running_process_adopts_a_replaced_secret_and_keeps_its_own_when_it_is_deleted(tmp_path, caplog):
    from recommender.serving.tokens import SecretHolder, replace_secret

    store, settings, clock = LocalStorage(tmp_path / "store"), Settings(cache_dir=str(tmp_path / "c")), [0.0]
    holder = SecretHolder(settings, store, 5.0, clock=lambda: clock[0])
    first = holder.current()
    replace_secret(settings, store, replace=True)
    assert holder.current() == first and not holder.due()  # looked at again only every 5 s
    clock[0] = 5.0
    assert holder.due()
    second = holder.current()
    assert second != first and second == store.read(SECRET_KEY).decode()
    store.delete(SECRET_KEY)
    clock[0] = 10.0
    assert holder.current() == second and store.list("secrets/") == []
    assert "deleted from" in caplog.text and "keeps the one it has" in caplog.text

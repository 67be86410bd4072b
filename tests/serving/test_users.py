"""User administration, on both storage backends."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from recommender.core.errors import AlreadyExists, AuthError, InvalidInput, NotFound
from recommender.serving.users import (
    UserCache,
    add_user,
    authenticate,
    change_password,
    delete_user,
    get_user,
    list_users,
)
from tests.conftest import ROOT


def test_add_get_list_delete(storage):
    add_user(storage, "alice", "password-1", "Alice", "alice@example.com", rounds=4)
    add_user(storage, "bob", "password-2", rounds=4)
    assert get_user(storage, "alice").email == "alice@example.com"
    assert [u.username for u in list_users(storage)] == ["alice", "bob"]
    delete_user(storage, "alice")
    assert [u.username for u in list_users(storage)] == ["bob"]
    with pytest.raises(NotFound, match="no user named 'alice'"):
        delete_user(storage, "alice")


def test_password_is_hashed_not_stored(storage):
    add_user(storage, "alice", "s3cret-value", rounds=4)
    raw = storage.read("users/alice.json")
    assert b"s3cret-value" not in raw
    assert json.loads(raw)["password_hash"].startswith("$bcrypt-sha256$")


@pytest.mark.parametrize("password", ["with spaces and 'quotes' \"too\"", "pässwörd-ünïcødé-密码", "x" * 200])
def test_awkward_passwords_work(storage, password):
    add_user(storage, "carol", password, rounds=4)
    assert authenticate(storage, "carol", password).username == "carol"
    with pytest.raises(AuthError):
        authenticate(storage, "carol", password[:-1])


def test_refusals(storage):
    add_user(storage, "alice", "password-1", rounds=4)
    with pytest.raises(AlreadyExists, match="already exists"):
        add_user(storage, "alice", "other-password", rounds=4)
    with pytest.raises(InvalidInput, match="password is empty"):
        add_user(storage, "dave", "", rounds=4)
    with pytest.raises(InvalidInput, match="malformed email"):
        add_user(storage, "dave", "password-1", email="not-an-email", rounds=4)
    with pytest.raises(InvalidInput, match="invalid user name"):
        add_user(storage, "../etc", "password-1", rounds=4)


def test_authenticate_refuses_with_one_message(storage):
    add_user(storage, "alice", "password-1", rounds=4)
    with pytest.raises(AuthError) as wrong_password:
        authenticate(storage, "alice", "nope")
    with pytest.raises(AuthError) as unknown_user:
        authenticate(storage, "mallory", "password-1")
    assert wrong_password.value.message == unknown_user.value.message


def test_ten_concurrent_adds_one_winner(storage):
    def attempt(i):
        try:
            add_user(storage, "same", f"password-{i}", rounds=4)
            return i
        except AlreadyExists:
            return None

    with ThreadPoolExecutor(10) as pool:
        winners = [r for r in pool.map(attempt, range(10)) if r is not None]
    assert len(winners) == 1
    authenticate(storage, "same", f"password-{winners[0]}")


def test_ten_concurrent_cli_processes_one_winner(tmp_path):
    env = {**os.environ, "STORAGE_URL": str(tmp_path / "store"), "BCRYPT_ROUNDS": "4", "PW": "password-1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "recommender", "add-user", "same", "--password-env", "PW"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(10)
    ]
    results = [(p.wait(), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in results].count(0) == 1
    failures = [err for rc, err in results if rc != 0]
    assert all(err.strip() == "error: user 'same' already exists" for err in failures), failures


def test_user_cache_forgets_deleted_users_after_ttl(storage):
    now = [0.0]
    add_user(storage, "alice", "password-1", rounds=4)
    cache = UserCache(storage, ttl_seconds=5, clock=lambda: now[0])
    assert cache.get("alice").username == "alice"
    delete_user(storage, "alice")
    assert cache.get("alice").username == "alice"  # still trusted within the ttl
    now[0] = 6.0
    with pytest.raises(NotFound):
        cache.get("alice")


def test_names_are_case_insensitive(storage):
    add_user(storage, "Alice", "password-1", rounds=4)
    with pytest.raises(AlreadyExists):
        add_user(storage, "ALICE", "password-2", rounds=4)
    assert authenticate(storage, "alice", "password-1").username == "Alice"
    assert get_user(storage, "aLiCe").username == "Alice"
    assert [u.username for u in list_users(storage)] == ["Alice"]
    delete_user(storage, "ALICE")
    assert list_users(storage) == []


def test_records_from_before_case_insensitive_names_still_work(storage):
    add_user(storage, "bob", "password-1", rounds=4)
    storage.write("users/Bob2.json", storage.read("users/bob.json").replace(b'"bob"', b'"Bob2"'))
    assert authenticate(storage, "Bob2", "password-1").username == "Bob2"
    with pytest.raises(AlreadyExists):
        add_user(storage, "BOB2", "password-2", rounds=4)


@pytest.mark.parametrize(
    "email",
    [
        "a@b.c<script>",
        "a@b.c",
        "<a>@b.com",
        "a b@c.com",
        "a@b..com",
        "a@-b.com",
        "a@b.com\nBcc: x@y.com",
        "x" * 250 + "@b.com",
    ],
)
def test_malformed_emails_refused(storage, email):
    with pytest.raises(InvalidInput, match="malformed email"):
        add_user(storage, "dave", "password-1", email=email, rounds=4)


@pytest.mark.parametrize("email", ["alice@example.com", "o'brien+tag@mail.example.co.uk", "x_y.z@sub-domain.io"])
def test_wellformed_emails_accepted(storage, email):
    assert add_user(storage, "dave", "password-1", email=email, rounds=4).email == email


@pytest.mark.parametrize("name", ["Alice\nLiddell", "Alice\tLiddell", "Alice\x1b[31m", "Alice\u2028Liddell"])
def test_full_names_with_control_characters_refused(storage, name):
    with pytest.raises(InvalidInput, match="control characters"):
        add_user(storage, "dave", "password-1", full_name=name, rounds=4)


def test_password_length_bounds(storage):
    with pytest.raises(InvalidInput, match="shorter than 8 characters"):
        add_user(storage, "dave", "seven77", rounds=4)
    with pytest.raises(InvalidInput, match="shorter than 12 characters"):
        add_user(storage, "dave", "eleven char", rounds=4, min_password_length=12)
    with pytest.raises(InvalidInput, match="longer than 4096 bytes"):
        add_user(storage, "dave", "é" * 2049, rounds=4)
    assert add_user(storage, "dave", "é" * 2048, rounds=4)


def test_oversized_or_unencodable_passwords_are_wrong_passwords(storage):
    add_user(storage, "alice", "password-1", rounds=4)
    for password in ("x" * 5000, "\ud800" * 10):
        with pytest.raises(AuthError, match="incorrect username or password"):
            authenticate(storage, "alice", password)


def test_unknown_users_cost_the_configured_rounds(storage, monkeypatch):
    from recommender.serving import users

    add_user(storage, "alice", "password-1", rounds=5)
    used = []
    real = users.password_context.__wrapped__

    def spy(rounds=12):
        used.append(rounds)
        return real(rounds)

    monkeypatch.setattr(users, "password_context", spy)
    users.dummy_hash.cache_clear()
    with pytest.raises(AuthError):
        authenticate(storage, "nobody", "password-1", rounds=5)
    assert used and set(used) == {5}
    assert ",r=5$" in users.dummy_hash(5)


def test_change_password_gives_a_new_stamp(storage):
    before = add_user(storage, "alice", "password-1", rounds=4)
    after = change_password(storage, "ALICE", "password-2", rounds=4)
    assert after.stamp and after.stamp != before.stamp and after.username == "alice"
    authenticate(storage, "alice", "password-2")
    with pytest.raises(AuthError):
        authenticate(storage, "alice", "password-1")
    with pytest.raises(NotFound):
        change_password(storage, "nobody", "password-3", rounds=4)
    with pytest.raises(InvalidInput, match="shorter"):
        change_password(storage, "alice", "short", rounds=4)


def test_recreated_account_has_another_stamp(storage):
    first = add_user(storage, "alice", "password-1", rounds=4)
    delete_user(storage, "alice")
    assert add_user(storage, "alice", "password-1", rounds=4).stamp != first.stamp

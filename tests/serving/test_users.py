"""User administration, on both storage backends."""

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from recommender.core.errors import AlreadyExists, AuthError, Conflict, InvalidInput, NotFound
from recommender.core.storage import LocalStorage
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


class SlowHashing:
    """The first hash waits, once it started, until the test lets it go on (later ones run at once): the window a
    real bcrypt hash of BCRYPT_ROUNDS=17 (seconds) leaves between reading a user's record and writing it, made
    deterministic."""

    def __init__(self, monkeypatch):
        from recommender.serving import users

        self.started, self.go = threading.Event(), threading.Event()
        real = users.password_context.__wrapped__
        slow = self

        class Context:
            def __init__(self, rounds):
                self.real = real(rounds)

            def hash(self, password):
                if not slow.started.is_set():
                    slow.started.set()
                    assert slow.go.wait(30)
                return self.real.hash(password)

            def verify(self, password, hashed):
                return self.real.verify(password, hashed)

        monkeypatch.setattr(users, "password_context", lambda rounds=12: Context(rounds))

    def run(self, fn, *args, **kwargs):
        """Start fn in a thread and return once it is hashing; .result() of the returned future after .go.set()."""
        future = ThreadPoolExecutor(1).submit(fn, *args, **kwargs)
        assert self.started.wait(30), future.exception()
        return future


def test_passwd_racing_del_user_does_not_bring_the_account_back(storage, monkeypatch):
    add_user(storage, "alice", "password-1", rounds=4)
    slow = SlowHashing(monkeypatch)
    passwd = slow.run(change_password, storage, "alice", "password-2", rounds=4)
    delete_user(storage, "alice")
    slow.go.set()
    with pytest.raises(Conflict, match="changed or deleted by another command.*nothing was changed"):
        passwd.result(30)
    with pytest.raises(NotFound):
        get_user(storage, "alice")
    assert storage.list("users/") == []


def test_passwd_racing_a_recreated_account_changes_nothing(storage, monkeypatch):
    add_user(storage, "alice", "password-1", rounds=4)
    slow = SlowHashing(monkeypatch)
    passwd = slow.run(change_password, storage, "alice", "password-2", rounds=4)
    delete_user(storage, "alice")
    recreated = add_user(storage, "alice", "password-3", "Alice Two", rounds=4)
    slow.go.set()
    with pytest.raises(Conflict):
        passwd.result(30)
    assert get_user(storage, "alice") == recreated
    assert authenticate(storage, "alice", "password-3", rounds=4).full_name == "Alice Two"


def test_passwd_racing_passwd_one_wins_and_the_other_says_so(storage, monkeypatch):
    add_user(storage, "alice", "password-1", rounds=4)
    slow = SlowHashing(monkeypatch)
    first = slow.run(change_password, storage, "alice", "password-2", rounds=4)
    # The second reads the record the first read, and writes before it.
    second = change_password(storage, "alice", "password-3", rounds=4)
    slow.go.set()
    with pytest.raises(Conflict):
        first.result(30)
    assert get_user(storage, "alice").stamp == second.stamp
    authenticate(storage, "alice", "password-3", rounds=4)


def test_del_user_racing_passwd_deletes_nothing(storage, monkeypatch):
    add_user(storage, "alice", "password-1", rounds=4)
    real_delete_if = storage.delete_if

    def passwd_first(key, tag):
        # Between delete_user's read and its delete: another command changes the password.
        change_password(storage, "alice", "password-2", rounds=4)
        return real_delete_if(key, tag)

    monkeypatch.setattr(storage, "delete_if", passwd_first)
    with pytest.raises(Conflict, match="while it was being deleted"):
        delete_user(storage, "alice")
    authenticate(storage, "alice", "password-2", rounds=4)


def test_add_user_racing_add_user_keeps_the_first_written(storage, monkeypatch):
    slow = SlowHashing(monkeypatch)
    first = slow.run(add_user, storage, "alice", "password-1", "First", rounds=4)
    add_user(storage, "alice", "password-2", "Second", rounds=4)
    slow.go.set()
    with pytest.raises(AlreadyExists):
        first.result(30)
    assert get_user(storage, "alice").full_name == "Second"
    authenticate(storage, "alice", "password-2", rounds=4)


def test_conditional_primitives_apply_only_to_the_content_read(storage):
    assert storage.write_if("users/x.json", b"one", None)
    assert not storage.write_if("users/x.json", b"two", None)  # only if absent
    assert not storage.create("users/x.json", b"two")
    data, tag = storage.read_tagged("users/x.json")
    assert data == b"one"
    assert storage.write_if("users/x.json", b"two", tag)
    assert not storage.write_if("users/x.json", b"three", tag)  # the tag read before names "one"
    assert not storage.delete_if("users/x.json", tag)
    assert storage.read("users/x.json") == b"two"
    _, tag = storage.read_tagged("users/x.json")
    assert storage.delete_if("users/x.json", tag)
    assert not storage.delete_if("users/x.json", tag)
    assert not storage.write_if("users/x.json", b"back", tag)  # deleted meanwhile: not brought back
    with pytest.raises(NotFound):
        storage.read("users/x.json")


@pytest.mark.parametrize(
    "password", ["abcdefghij\n", "abc\r\ndefghij", "abcd\tefghij", "abcdefghij\x00", "abc\x7fdefghij"]
)
def test_passwords_with_control_characters_refused_on_every_path(tmp_path, password):
    storage = LocalStorage(tmp_path)  # validation, the same on either backend
    with pytest.raises(InvalidInput, match="^the password contains a control character"):
        add_user(storage, "dave", password, rounds=4)
    assert storage.list("users/") == []
    add_user(storage, "dave", "password-1", rounds=4)
    with pytest.raises(InvalidInput, match="^the password contains a control character"):
        change_password(storage, "dave", password, rounds=4)
    authenticate(storage, "dave", "password-1", rounds=4)


@pytest.mark.parametrize("char", ["\u202e", "\u200b", "\u2066", "\ufeff", "\u00ad", "\U000e0041"])
def test_full_names_and_emails_with_format_characters_refused(tmp_path, char):
    storage = LocalStorage(tmp_path)
    with pytest.raises(InvalidInput, match="invisible format characters"):
        add_user(storage, "dave", "password-1", full_name=f"Carol {char}liveD", rounds=4)
    with pytest.raises(InvalidInput, match="^malformed email address .*invisible format characters"):
        add_user(storage, "dave", "password-1", email=f"a{char}@b.com", rounds=4)
    assert storage.list("users/") == []


def test_names_that_need_joiners_are_accepted(storage):
    # Persian and Indic script spell words with the zero-width non-joiner and joiner.
    assert add_user(storage, "dave", "password-1", full_name="می\u200cخواهم", rounds=4).full_name == "می\u200cخواهم"


@pytest.mark.slow
def test_passwd_racing_del_user_as_commands_with_slow_hashing(tmp_path):
    # The review's reproduction, as an operator runs it: passwd hashing at BCRYPT_ROUNDS=13 (about a second), del_user
    # meanwhile. Whichever way the race goes, the account stays deleted and passwd says so in one line.
    store = LocalStorage(tmp_path / "store")
    add_user(store, "alice", "password-1", rounds=4)
    env = {**os.environ, "STORAGE_URL": str(tmp_path / "store"), "BCRYPT_ROUNDS": "13", "PW": "password-2"}

    def command(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "recommender", *args], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
        )

    passwd = command("passwd", "alice", "--password-env", "PW")
    time.sleep(0.3)
    deleted = command("del-user", "alice")
    assert deleted.wait(60) == 0, deleted.stderr.read()
    assert passwd.wait(120) == 1
    message = passwd.stderr.read()
    assert message.count("\n") == 1 and message.startswith("error: "), message
    assert store.list("users/") == []

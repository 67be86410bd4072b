"""The make targets as a user types them: user admin (with awkward passwords), training errors, help."""

import os
import subprocess
import sys

import pytest

from recommender.core.storage import LocalStorage
from recommender.serving.users import authenticate
from tests.conftest import ROOT, make_runner

pytestmark = pytest.mark.slow


@pytest.fixture
def make(tmp_path):
    env = {**os.environ, "STORAGE_URL": str(tmp_path / "data"), "RUN_DIR": str(tmp_path / "run")}
    env.pop("PASSWORD", None)

    run = make_runner(env)
    return lambda *args, stdin=None: run(*args, check=False, stdin=stdin)


def test_help_is_the_default_and_lists_every_target():
    out = subprocess.run(["make", "--no-print-directory"], cwd=ROOT, capture_output=True, text=True).stdout
    targets = {
        line.split(":")[0]
        for line in (ROOT / "Makefile").read_text().splitlines()
        if line and line[0].isalpha() and ":" in line and "##" in line
    }
    assert targets and all(t in out for t in targets)


def test_add_list_del_user_with_awkward_password(make, tmp_path):
    password = "two words, \"double\" 'single' $HOME `cmd` ünïcødé ✓"
    added = make(
        "add_user", "USER_NAME=alice", f"PASSWORD={password}", "FULL_NAME=Alice Liddell", "EMAIL=alice@example.com"
    )
    assert added.returncode == 0, added.stderr
    assert authenticate(LocalStorage(tmp_path / "data"), "alice", password).full_name == "Alice Liddell"
    listed = make("list_users")
    assert "alice" in listed.stdout and "alice@example.com" in listed.stdout
    assert password not in added.stdout + added.stderr + listed.stdout
    assert make("del_user", "USER_NAME=alice").returncode == 0
    assert "alice" not in make("list_users").stdout


def test_password_from_stdin(make, tmp_path):
    assert make("add_user", "USER_NAME=bob", stdin="from stdin pw\n").returncode == 0
    authenticate(LocalStorage(tmp_path / "data"), "bob", "from stdin pw")


def test_passwd_and_crlf_from_stdin(make, tmp_path):
    storage = LocalStorage(tmp_path / "data")
    assert make("add_user", "USER_NAME=bob", stdin="windows pw\r\n").returncode == 0
    authenticate(storage, "bob", "windows pw")  # the \r of a CRLF line is not part of the password
    before = storage.read("users/bob.json")
    changed = make("passwd", "USER_NAME=BOB", stdin="a new password\r\n")
    assert changed.returncode == 0 and "changed the password of bob" in changed.stdout, changed.stderr
    authenticate(storage, "bob", "a new password")
    assert b"a new password" not in storage.read("users/bob.json") and storage.read("users/bob.json") != before


def test_short_jwt_secret_refused_at_start(tmp_path):
    env = {
        **os.environ,
        "STORAGE_URL": str(tmp_path / "data"),
        "RUN_DIR": str(tmp_path / "run"),
        "JWT_SECRET": "only-twenty-bytes-xx",
    }
    result = make_runner(env)("run-prod", check=False)
    assert result.returncode != 0
    assert "error: JWT_SECRET is 20 bytes long; a token signing secret needs at least 32" in result.stderr
    assert result.stderr.count("error:") == 1 and not (tmp_path / "run" / "server.pid").exists()


def test_a_lost_signing_secret_stops_the_server_at_start_and_new_secret_makes_one(tmp_path):
    from recommender.serving.users import add_user

    storage = LocalStorage(tmp_path / "data")
    add_user(storage, "alice", "password-1", rounds=4)
    storage.delete("secrets/jwt_secret")
    env = {**os.environ, "STORAGE_URL": str(tmp_path / "data"), "RUN_DIR": str(tmp_path / "run")}
    make = make_runner(env)
    serve = subprocess.run(
        [sys.executable, "-m", "recommender", "serve"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert serve.returncode == 1 and serve.stderr.count("\n") == 1, serve.stderr
    assert (
        serve.stderr.startswith("error: the token signing secret is missing from") and "make new_secret" in serve.stderr
    )
    result = make("run-prod", check=False)
    assert result.returncode != 0 and "error: the token signing secret is missing from" in result.stderr
    assert not (tmp_path / "run" / "server.pid").exists() and storage.list("secrets/") == []
    made = make("new_secret")
    assert "made the token signing secret" in made.stdout and storage.list("secrets/") == ["secrets/jwt_secret"]
    again = make("new_secret", check=False)
    assert again.returncode != 0 and "REPLACE=1" in again.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["add_user", "USER_NAME=alice", "PASSWORD=other password"], "error: user 'alice' already exists"),
        (["add_user", "USER_NAME=carol", "PASSWORD="], "error: the password is empty"),
        (
            ["add_user", "USER_NAME=carol", "PASSWORD=long enough", "EMAIL=nope"],
            "error: malformed email address 'nope'",
        ),
        (["del_user", "USER_NAME=nobody"], "error: no user named 'nobody'"),
        (["del_user"], "error: give the user name"),
        (["add_user", "USER_NAME=carol", "PASSWORD=" + "x" * 5000], "error: the password is longer than 4096 bytes"),
        (["add_user", "USER_NAME=carol", "PASSWORD=short"], "error: the password is shorter than 8 characters"),
        (["add_user", "USER_NAME=ALICE", "PASSWORD=password-2"], "error: user 'ALICE' already exists"),
        (["add_user", "USER_NAME=carol", "PASSWORD=password-2", "EMAIL=a@b.c<script>"], "error: malformed email"),
        (["add_user", "USER_NAME=carol", "PASSWORD=password-2", "FULL_NAME=Carol\n\tEvil"], "control characters"),
        (["passwd", "USER_NAME=nobody", "PASSWORD=password-2"], "error: no user named 'nobody'"),
        (["add_user", "USER_NAME=carol", "PASSWORD=abcdefghij\n"], "error: the password contains a control character"),
        (["passwd", "USER_NAME=alice", "PASSWORD=abc\r\ndefghij"], "error: the password contains a control character"),
        (["add_user", "USER_NAME=carol", "PASSWORD=password-2", "FULL_NAME=Carol \u202eliveD"], "format characters"),
    ],
)
def test_user_refusals_one_line_nonzero(make, args, message):
    assert make("add_user", "USER_NAME=alice", "PASSWORD=password-1").returncode == 0
    result = make(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert result.stderr.count("error:") == 1


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("data.json", "{}", "unsupported file type .json"),
        ("absent.csv", None, "file not found"),
        ("semi.csv", "InvoiceNo;StockCode;Description;CustomerID\n1;2;3;4\n", "semicolon-separated"),
        (
            "cols.csv",
            "InvoiceNo,Code\n1,2\n",
            "lacks required column(s) StockCode, Description, CustomerID; found: InvoiceNo, Code",
        ),
        ("header.csv", "InvoiceNo,StockCode,Description,CustomerID\n", "header but no data rows"),
        ("fake.xlsx", "not a workbook", "cannot read fake.xlsx as .xlsx"),  # the parse started before the imports
    ],
)
def test_train_bad_input_one_line_nonzero(make, tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    result = make("train", f"PATH_TO_DATA={path}")
    assert result.returncode != 0
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0]
    assert "Traceback" not in result.stderr


def test_train_without_path_says_how(make):
    result = make("train")
    assert result.returncode != 0 and "PATH_TO_DATA" in result.stderr


def test_feed_targets_and_commands_answer_to_their_earlier_names_too(make, tmp_path, capsys):
    from recommender import cli

    feed = tmp_path / "products.csv"
    feed.write_text("id,availability,price\nA1,in_stock,1.5\nB2,out_of_stock,2\n")
    uploaded = make("catalog", f"PATH_TO_CATALOG={feed}")  # the earlier target and variable
    assert uploaded.returncode == 0 and "activated feed version" in uploaded.stdout, uploaded.stderr
    shown = make("feed_show", "CODE=B2").stdout
    assert "out_of_stock" in shown and make("catalog_show", "CODE=B2").stdout == shown
    answers = []
    for name in ("feed-show", "catalog-show"):  # the same storage as make's: STORAGE_URL is tmp_path / "data"
        assert cli.main([name]) == 0
        answers.append(capsys.readouterr().out)
    assert answers[0] == answers[1] and "2 products" in answers[0]
    listed = make("help").stdout
    assert "feed_show" in listed and "catalog" not in listed
    assert (
        "catalog"
        not in subprocess.run(
            [sys.executable, "-m", "recommender", "--help"], capture_output=True, text=True, cwd=ROOT
        ).stdout
    )


def test_promote_with_nothing_staged(make, tiny_csv):
    result = make("load_after_parallel_train")
    assert result.returncode != 0 and "nothing is staged" in result.stderr


def _lines(text: str) -> list[str]:
    return text.strip().splitlines()


def test_damaged_active_pointer_is_one_line_and_a_training_repairs_it(trained_storage, tiny_csv, capsys):
    from recommender import cli
    from recommender.core import registry

    version = registry.active_version(trained_storage)
    trained_storage.write(registry.ACTIVE, b"")
    assert cli.main(["rollback"]) == 1
    (error,) = _lines(capsys.readouterr().err)
    assert error.startswith("error: models/ACTIVE in ") and "is damaged (empty): run `make train" in error
    assert cli.main(["versions"]) == 1
    out, err = capsys.readouterr()
    assert [line.split()[:2] for line in _lines(out)] == [["VERSION", "STATE"], [version, "-"]]
    assert len(_lines(err)) == 1 and "is damaged" in err
    assert cli.main(["train", str(tiny_csv)]) == 0
    assert "note: models/ACTIVE in " in capsys.readouterr().err
    assert cli.main(["versions"]) == 0
    assert _lines(capsys.readouterr().out)[-1].split()[1:3] == ["active", "tiny.csv"]


def test_versions_marks_incomplete_and_damaged_ones(trained_storage, tiny_csv, capsys):
    from recommender import cli
    from recommender.core import registry
    from recommender.training.pipeline import train

    good = registry.active_version(trained_storage)
    staged = train(tiny_csv, trained_storage, activate=False, progress=lambda _m: None).version
    trained_storage.write(registry.artifact_key(staged, "index.ann"), b"damaged")
    assert cli.main(["promote"]) == 1
    assert "index.ann is damaged" in capsys.readouterr().err
    unfinished = staged[:15] + "999Z-killed"
    trained_storage.write(registry.artifact_key(unfinished, "index.ann"), b"half")
    assert cli.main(["versions"]) == 0
    # After its row, what is wrong with a version.
    header, *rows = _lines(capsys.readouterr().out)
    assert [row.split()[:3] for row in rows] == [
        [good, "active", "tiny.csv"],
        [staged, "staged", "tiny.csv"],
        [unfinished, "-", "-"],
    ]
    assert rows[0].endswith(" single") and rows[1].endswith("  damaged: index.ann fails its checksum")
    assert rows[2].endswith("  incomplete, no manifest: being published, or killed while it was")

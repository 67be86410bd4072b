"""`versions`, `rollback` and `activate` as commands, on damaged and old versions: one line each, never a traceback."""

import json
import shutil

from recommender import cli
from recommender.core import registry

EARLIER = "20200101T000000000Z-0123456789ab"
WRONG = {
    "20200102T000000000Z-000000000001": b"[]",
    "20200102T000000000Z-000000000002": b"5",
    "20200102T000000000Z-000000000003": b'"str"',
    "20200102T000000000Z-000000000004": b"true",
    "20200102T000000000Z-000000000005": b'{"artifacts": {"../../users/alice.json": "00"}}',
}


def _copy(storage, version: str, to: str) -> None:
    """Another version with the same artifacts (an earlier id: listed first)."""
    root = storage.root / registry.VERSIONS
    shutil.copytree(root / version, root / to)


def test_versions_lists_manifests_of_the_wrong_shape_as_damaged(trained_storage, capsys):
    active = registry.active_version(trained_storage)
    for version, content in WRONG.items():
        trained_storage.write(registry.artifact_key(version, registry.MANIFEST), content)
    assert cli.main(["versions"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["VERSION", "STATE", "FILE", "DATES", "ROWS", "PRODUCTS", "HR@10", "ENGINE"]
    rows = {line.split()[0]: line for line in out[1:]}
    assert rows.keys() == {active, *WRONG}
    for version in WRONG:
        cells = rows[version].split()
        assert cells[1:8] == ["-"] * 7 and "damaged: unreadable manifest (" in rows[version]
    assert "not a plain file name" in rows["20200102T000000000Z-000000000005"]
    assert rows[active].split()[1:3] == ["active", "tiny.csv"]


def test_a_version_from_before_these_fields_shows_dashes(trained_storage, capsys):
    active = registry.active_version(trained_storage)
    _copy(trained_storage, active, EARLIER)
    key = registry.artifact_key(EARLIER, registry.MANIFEST)
    manifest = json.loads(trained_storage.read(key))
    for field in ("source", "period", "counts", "evaluation", "engine"):
        del manifest[field]
    trained_storage.write(key, json.dumps(manifest).encode())
    assert cli.main(["versions"]) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith(EARLIER)]
    assert row.split() == [EARLIER, "-", "-", "-", "-", "-", "-", "-"]


def test_rollback_says_the_earlier_version_is_damaged_and_which(trained_storage, capsys):
    active = registry.active_version(trained_storage)
    _copy(trained_storage, active, EARLIER)
    registry.write_pointer(trained_storage, registry.ACTIVE, registry.Pointer(active, (EARLIER,)), "activated_at")
    trained_storage.write(registry.artifact_key(EARLIER, "index.ann"), b"damaged")
    assert cli.main(["rollback"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: cannot roll back, nothing changed: model version {EARLIER}: artifact index.ann is damaged "
        "(checksum mismatch)"
    ]
    assert registry.active_version(trained_storage) == active
    trained_storage.write(registry.artifact_key(EARLIER, registry.MANIFEST), b"[]")
    assert cli.main(["rollback"]) == 1
    assert f"model version {EARLIER} has a damaged manifest (a JSON list" in capsys.readouterr().err
    # activate names it too
    assert cli.main(["activate", EARLIER]) == 1
    assert f"error: model version {EARLIER} has a damaged manifest" in capsys.readouterr().err


def test_activate_names_what_it_cannot_find(trained_storage, capsys):
    active = registry.active_version(trained_storage)
    assert cli.main(["activate", active[:10]]) == 0
    assert capsys.readouterr().out.strip() == f"version {active} is already active"
    assert cli.main(["activate", "2099"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: no model version '2099' in {trained_storage.url}: `make versions` lists them"
    )

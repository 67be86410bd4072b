"""The web console's files and headers, and its two endpoints (model information, a real basket), without a browser
(tests/serving/test_console_browser.py drives the page itself)."""

import json
import re
import subprocess
from html.parser import HTMLParser

import pytest

from recommender.core import registry
from recommender.serving import console
from tests.conftest import ROOT
from tests.functions.test_functions import auth, headers, rec, token  # noqa: F401 (fixtures)

STATIC = ROOT / "shared" / "recommender" / "serving" / "static"


@pytest.mark.parametrize(
    "path, kind", [("/", "text/html"), ("/console.js", "text/javascript"), ("/console.css", "text/css")]
)
def test_files_are_served_with_security_headers(rec, path, kind):
    response = rec.get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"  # serving.web's, on every response
    head = rec.head(path)
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == response.headers["etag"]
    again = rec.get(path, headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_page_weight_is_at_most_100_kb():
    assert console.page_bytes() <= 100_000
    assert {p.name for p in STATIC.iterdir()} == {
        "index.html",
        "console.js",
        "console.css",
        "widget.js",
    }  # and the widget


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text += data.strip()


def test_no_inline_script_style_or_remote_resource():
    page = _Tags()
    page.feed((STATIC / "index.html").read_text())
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert scripts == [{"src": "console.js", "defer": None}] and page.script_text == ""
    for tag, attrs in page.tags:
        assert not [a for a in attrs if a.startswith("on") or a == "style"], (tag, attrs)
        for name in ("src", "href"):
            assert not re.match(r"(https?:)?//", attrs.get(name) or ""), (tag, attrs)  # no CDN, works offline
    labelled = {attrs["for"] for tag, attrs in page.tags if tag == "label"}
    controls = {attrs["id"] for tag, attrs in page.tags if tag in ("input", "select", "textarea")}
    assert controls <= labelled


def test_script_inserts_text_only():
    script = re.sub(r"^\s*//.*$", "", (STATIC / "console.js").read_text(), flags=re.M)  # code, not comments
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "localStorage",
    ):
        assert sink not in script, sink


def test_the_layer_and_the_wheel_carry_the_files(tmp_path):
    subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT / "shared"), "layer-source", f"TARGET={tmp_path}"],
        check=True,
        capture_output=True,
    )
    for name in ("index.html", "console.js", "console.css"):
        assert (tmp_path / "recommender/serving/static" / name).read_bytes() == (STATIC / name).read_bytes()
    import tomllib

    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "static/*" in package_data["recommender.serving"]


def test_endpoints_need_a_token(rec):
    for path in ("/model", "/sample_basket"):
        response = rec.get(path)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"


def test_sample_basket_is_a_training_invoice(rec, headers, trained_storage):
    version = registry.active_version(trained_storage)
    samples = json.loads(trained_storage.read(registry.artifact_key(version, registry.SAMPLES)))["invoices"]
    by_invoice = {s["invoice"]: s for s in samples}
    seen = set()
    for _ in range(20):
        answer = rec.get("/sample_basket", headers=headers).json()
        assert answer["model_version"] == version
        sample = by_invoice[answer["invoice"]]
        assert [i["stock_code"] for i in answer["items"]] == sample["items"] and answer["date"] == sample["date"]
        assert all(i["description"] for i in answer["items"])
        seen.add(answer["invoice"])
    assert len(seen) > 1  # drawn at random


def test_sample_basket_of_a_model_without_samples_says_so(rec, headers, trained_storage):
    """Models trained before samples were kept still serve; only this endpoint says what is missing."""
    version = registry.active_version(trained_storage)
    key = registry.artifact_key(version, registry.MANIFEST)
    manifest = json.loads(trained_storage.read(key))
    del manifest["artifacts"][registry.SAMPLES]
    trained_storage.write(key, json.dumps(manifest).encode())
    trained_storage.delete(registry.artifact_key(version, registry.SAMPLES))
    response = rec.get("/sample_basket", headers=headers)
    assert response.status_code == 404
    assert "keeps no sample invoices" in response.json()["detail"] and "train it again" in response.json()["detail"]


def test_model_information(rec, headers, trained_storage, tiny_csv):
    from recommender.training.pipeline import train

    first = registry.active_version(trained_storage)
    staged = train(tiny_csv, trained_storage, activate=False, progress=lambda _m: None).version
    trained_storage.write("models/versions/20990101T000000000Z-unfinished/index.ann", b"still uploading")
    info = rec.get("/model", headers=headers).json()
    manifest = registry.read_manifest(trained_storage, first)
    assert info["model_version"] == first and info["created_at"] == manifest["created_at"]
    assert info["item_count"] == manifest["counts"]["items"] and info["counts"] == manifest["counts"]
    assert info["source"]["file"] == "tiny.csv" and info["evaluation"] == manifest["evaluation"]
    assert info["evaluation"]["model"]["hr"] > 0 and info["period"] == manifest["period"] and info["calibrated"]
    assert info["active_version"] == first and info["staged_version"] == staged
    rows = {v["version"]: v for v in info["versions"]}
    assert [v["version"] for v in info["versions"]] == sorted(rows, reverse=True)  # newest first
    assert rows[first]["active"] and rows[first]["served"] and not rows[first]["staged"]
    assert (
        rows[staged]["staged"] and not rows[staged]["active"] and rows[staged]["items"] == manifest["counts"]["items"]
    )
    assert rows["20990101T000000000Z-unfinished"]["complete"] is False


def test_model_information_shows_evaluation_figures(rec, headers, trained_storage):
    version = registry.active_version(trained_storage)
    key = registry.artifact_key(version, registry.MANIFEST)
    manifest = json.loads(trained_storage.read(key))
    manifest["evaluation"] = {
        "protocol": "last 10% of baskets",
        "cutoff": "2011-11-09",
        "holdout_baskets": 30,
        "cases": 120,
        "k": 10,
        "model": {"hr": 0.4, "mrr": 0.2},
        "popularity": {"hr": 0.1, "mrr": 0.05},
        "seconds": 0.3,
    }
    trained_storage.write(key, json.dumps(manifest).encode())
    info = rec.get("/model", headers=headers).json()
    assert info["versions"][0]["evaluation"]["model"]["hr"] == 0.4


def test_model_information_names_the_feed_rules_and_categories(rec, headers, trained_storage, tmp_path):
    from recommender.training.feed import publish_feed
    from recommender.training.rules import known_from, publish_rules

    version = registry.active_version(trained_storage)
    codes = json.loads(trained_storage.read(registry.artifact_key(version, "catalog.json")))["codes"]
    feed = tmp_path / "feed.csv"
    feed.write_text(
        "id,category\n"
        + "".join(
            f"{code},{path}\n"
            for code, path in zip(
                codes, ["Home > Kitchen > Mugs", "home > kitchen", "Garden", "Home>Lights"] * len(codes)
            )
        )
        + "NOT-IN-MODEL,Toys\n"
    )
    feed_version = publish_feed(trained_storage, feed, progress=lambda _m: None)["version"]
    rules = tmp_path / "rules.yaml"
    rules.write_text("boost:\n  - {category: Garden, factor: 2}\n")
    rules_version = publish_rules(trained_storage, rules, known_from(codes, {}), progress=lambda _m: None)["version"]
    info = rec.get("/model", headers=headers).json()
    assert info["feed_version"] == feed_version and info["rules_version"] == rules_version
    # every level as a path the categories filter accepts, spelled as the feed first does, once each
    assert info["categories"] == ["Garden", "Home", "Home > Kitchen", "Home > Kitchen > Mugs", "Home > Lights"]
    answer = rec.post(
        "/recommendations", headers=headers, json={"product_list": [], "n": 3, "categories": ["Home > Kitchen"]}
    ).json()
    assert len(answer["items"]) == 3 and all(
        i["category"].lower().startswith("home > kitchen") for i in answer["items"]
    )

"""Merchandising rules files: the issue's example, every refusal (one line, old rules kept), unknown-name warnings,
the JSON Schema for editors."""

import json
import re

import jsonschema
import pytest
import yaml

from recommender import cli
from recommender.core import registry
from recommender.core.storage import LocalStorage
from recommender.training.rules import RulesError, json_schema, known_from, publish_rules, read_rules, show, validate

EXAMPLE = """\
block:
  codes: ["POST", "85123A"]
  categories: ["Gift cards"]
do_not_pair:
  - {basket: {category: "Printers"}, item: {brand: "OtherInk"}}
pin:
  - {basket: {code: "22423"}, item: {code: "22699"}, position: 1}
boost:
  - {category: "Kitchen", factor: 1.5}
  - {code: "21212", factor: 0.5}
bury:
  - {brand: "Cheapo", factor: 0.2}
"""
KNOWN = known_from(
    ["85123A", "22423", "22699", "21212"],
    {
        "22699": {"category": "Home > Kitchen", "brand": "Acme"},
        "P1": {"category": "Printers"},
        "I1": {"brand": "OtherInk"},
    },
)


def write(tmp_path, text, name="rules.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_issue_example(tmp_path):
    rules, source = read_rules(write(tmp_path, EXAMPLE))
    assert rules["block"] == {"codes": ["POST", "85123A"], "categories": ["Gift cards"], "brands": []}
    assert rules["do_not_pair"] == [{"basket": {"category": ["Printers"]}, "item": {"brand": ["OtherInk"]}}]
    assert rules["pin"] == [{"basket": {"code": ["22423"]}, "item": {"code": ["22699"]}, "position": 1}]
    assert rules["boost"] == [
        {"category": ["Kitchen"], "factor": 1.5},
        {"code": ["21212"], "factor": 0.5},
        {"brand": ["Cheapo"], "factor": 0.2},
    ]
    assert source.decode() == EXAMPLE


@pytest.mark.parametrize(
    "text,message",
    [
        ("block: [\n", "not valid YAML at line 2"),
        ("blocks:\n  codes: [A]\n", "rules: unknown key 'blocks'; allowed: block, do_not_pair, pin, boost, bury"),
        ("block:\n  skus: [A]\n", "block: unknown key 'skus'"),
        ("- a\n- b\n", "rules: expected a mapping"),
        (
            "pin:\n  - {basket: {code: A}, item: {code: B}, position: 0}\n",
            "pin\\[0\\].position: must be a whole number",
        ),
        ("pin:\n  - {basket: {code: A}, item: {category: C}}\n", "pin\\[0\\].item: unknown key 'category'; use code"),
        ("pin:\n  - {basket: {code: A}}\n", "pin\\[0\\]: missing 'item'"),
        ("boost:\n  - {code: A, factor: -1}\n", "boost\\[0\\].factor: must be a positive number, got -1$"),
        ("boost:\n  - {code: A, factor: fast}\n", "boost\\[0\\].factor: must be a positive number, got 'fast'"),
        ("bury:\n  - {code: A, factor: 2}\n", "bury\\[0\\].factor: a bury factor must be below 1"),
        ("bury:\n  - {code: A}\n", "bury\\[0\\]: missing 'factor'"),
        ("pin:\n  - {basket: {code: A}, item: {code: [B, C]}}\n", "pin\\[0\\].item: a pin places one code, got 2"),
        ("pin:\n  - {basket: {code: A}, item: {code: B}, position: '2'}\n", "pin\\[0\\].position: .* got '2'"),
        (
            "do_not_pair:\n  - {basket: {code: null}, item: {code: B}}\n",
            "do_not_pair\\[0\\].basket.code: expected a non-empty text or a list of them, got None",
        ),
        ("do_not_pair:\n  - {basket: {}, item: {code: B}}\n", "do_not_pair\\[0\\].basket: expected one of code: ..., "),
        ("do_not_pair:\n  - 5\n", "do_not_pair\\[0\\]: expected a mapping, got 5"),
        ("block: 5\n", "block: expected a mapping, got 5"),
        ("boost:\n  - {code: A, brand: B, factor: 2}\n", "boost\\[0\\]: expected one of"),
        (
            "do_not_pair:\n  - {basket: {code: A}, item: {colour: red}}\n",
            "do_not_pair\\[0\\].item: unknown key 'colour'",
        ),
        ("do_not_pair: {basket: {code: A}}\n", "do_not_pair: expected a list of entries"),
        ("block:\n  codes: [A, '']\n", "block.codes: expected a non-empty text"),
    ],
)
def test_refusals_are_one_line_and_keep_the_rules(tmp_path, text, message):
    storage = LocalStorage(tmp_path / "store")
    first = publish_rules(storage, write(tmp_path, EXAMPLE), KNOWN, progress=lambda _m: None)
    with pytest.raises(RulesError, match=message) as err:
        publish_rules(storage, write(tmp_path, text, "bad.yaml"), KNOWN, progress=lambda _m: None)
    assert "\n" not in str(err.value) and str(err.value).startswith("bad.yaml")
    assert registry.active_version(storage, registry.RULES) == first["version"]
    assert registry.list_versions(storage, registry.RULES) == [first["version"]]


@pytest.mark.parametrize("block", ["codes: ['22699']", "categories: ['kitchen']", "brands: ['ACME']"])
def test_a_pin_of_a_blocked_item_is_refused(tmp_path, block):
    text = f"block:\n  {block}\npin:\n  - {{basket: {{code: '22423'}}, item: {{code: '22699'}}, position: 2}}\n"
    with pytest.raises(RulesError, match="rules.yaml: pin\\[0\\]: item 22699 is blocked"):
        publish_rules(LocalStorage(tmp_path / "store"), write(tmp_path, text), KNOWN, progress=lambda _m: None)


def test_unknown_names_are_accepted_with_a_warning(tmp_path, storage):
    lines = []
    manifest = publish_rules(storage, write(tmp_path, EXAMPLE), KNOWN, progress=lines.append)
    text = "\n".join(lines)
    assert "warning: 1 code(s) unknown to the current model and feed (rules kept for them): POST" in text
    assert "warning: 1 category(s) unknown" in text and "Gift cards" in text
    assert "warning: 1 brand(s) unknown" in text and "Cheapo" in text
    assert manifest["warnings"] and registry.active_version(storage, registry.RULES) == manifest["version"]
    stored = json.loads(registry.read_verified(storage, manifest["version"], "rules.json", registry.RULES))
    assert stored["pin"][0]["position"] == 1
    shown = "\n".join(show(storage))
    assert manifest["version"] in shown and "pin: 1" in shown and "do_not_pair:" in shown


def test_an_empty_file_clears_the_rules(tmp_path):
    rules, _ = read_rules(write(tmp_path, ""))
    assert rules == {"block": {"codes": [], "categories": [], "brands": []}, "do_not_pair": [], "pin": [], "boost": []}


def test_the_json_schema_accepts_what_the_validator_accepts():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for text in (
        EXAMPLE,
        "",
        "pin:\n",
        "block:\n  codes:\n",
        "boost:\n  - {code: [22423, A], factor: 1}\n",
        "pin:\n  - {basket: {brand: X}, item: {code: [B]}}\n",
    ):
        raw = yaml.safe_load(text)
        validate(raw)
        jsonschema.validate({} if raw is None else raw, schema)


@pytest.mark.parametrize(
    "text",
    [
        "blocks:\n  codes: [A]\n",
        "block:\n  skus: [A]\n",
        "- a\n- b\n",
        "block: 5\n",
        "pin:\n  - {basket: {code: A}, item: {code: B}, position: 0}\n",
        "pin:\n  - {basket: {code: A}, item: {code: B}, position: 101}\n",
        "pin:\n  - {basket: {code: A}, item: {code: B}, position: '2'}\n",
        "pin:\n  - {basket: {code: A}, item: {category: C}}\n",
        "pin:\n  - {basket: {code: A}}\n",
        "pin:\n  - {basket: {code: A}, item: {code: [B, C]}}\n",
        "boost:\n  - {code: A, factor: -1}\n",
        "boost:\n  - {code: A, factor: 0}\n",
        "boost:\n  - {code: A, factor: fast}\n",
        "boost:\n  - {code: A}\n",
        "boost:\n  - {factor: 2}\n",
        "boost:\n  - {code: A, brand: B, factor: 2}\n",
        "bury:\n  - {code: A, factor: 2}\n",
        "bury:\n  - {code: A, factor: 1}\n",
        "do_not_pair:\n  - {basket: {code: A}, item: {colour: red}}\n",
        "do_not_pair: {basket: {code: A}}\n",
        "do_not_pair:\n  - {basket: {}, item: {code: B}}\n",
        "do_not_pair:\n  - {basket: {code: null}, item: {code: B}}\n",
        "block:\n  codes: [A, '']\n",
        "block:\n  codes: [A, '  ']\n",
        "block:\n  brands: [true]\n",
    ],
)
def test_the_json_schema_refuses_what_the_validator_refuses(text):
    """What an editor marks while the file is typed is what make rules refuses."""
    raw = yaml.safe_load(text)
    with pytest.raises(RulesError):
        validate(raw)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, json_schema())


def test_rules_schema_command_prints_or_writes_the_schema(tmp_path, capsys):
    assert cli.main(["rules-schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json_schema() and "yaml-language-server" in printed["description"]
    out = tmp_path / "rules.schema.json"
    assert cli.main(["rules-schema", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == printed
    assert f"# yaml-language-server: $schema={out}" in capsys.readouterr().err


def test_aliases_are_refused_before_they_expand(tmp_path):
    """One anchored code and 300 aliases would store 300 copies of it: refused with the line, nothing stored."""
    text = (
        "block:\n  codes: [&big "
        + "A" * 150
        + "]\nboost:\n"
        + "".join("  - {code: *big, factor: 2}\n" for _ in range(300))
    )
    storage = LocalStorage(tmp_path / "store")
    with pytest.raises(RulesError, match=r"rules\.yaml: line 4, column 12: aliases \(\*name\) are not accepted"):
        publish_rules(storage, write(tmp_path, text), KNOWN, progress=lambda _m: None)
    assert registry.active(storage, registry.RULES) is None
    with pytest.raises(RulesError, match="aliases"):
        read_rules(write(tmp_path, "base: &b {code: A, factor: 2}\nboost:\n  - <<: *b\n"))


def test_files_and_stored_rules_over_their_limits_are_refused(tmp_path):
    path = write(tmp_path, "block:\n  codes: [" + ", ".join(f"C{i}" for i in range(3000)) + "]\n")
    storage = LocalStorage(tmp_path / "store")
    with pytest.raises(RulesError, match=r"bytes; a rules file may hold at most 10,000 \(MAX_RULES_BYTES\)$"):
        publish_rules(storage, path, KNOWN, progress=lambda _m: None, max_bytes=10_000)
    # Stored (JSON, one code a line) the same rules take more than the file: bounded on their own.
    with pytest.raises(RulesError, match=r"once stored; at most 20,000 are accepted \(MAX_RULES_STORED_BYTES\)$"):
        publish_rules(storage, path, KNOWN, progress=lambda _m: None, max_stored_bytes=20_000)
    assert registry.active(storage, registry.RULES) is None
    publish_rules(storage, path, KNOWN, progress=lambda _m: None)  # the defaults (1 MiB, 4 MiB) take it


@pytest.mark.parametrize(
    "text,where",
    [
        ("block:\n  codes: [" + "7" * 201 + "]\n", "block.codes"),
        ("pin:\n  - {basket: {code: A}, item: {code: " + "B" * 201 + "}}\n", "pin[0].item.code"),
        ("boost:\n  - {brand: " + "b" * 751 + ", factor: 2}\n", "boost[0].brand"),
    ],
)
def test_overlong_codes_and_names_are_refused(tmp_path, text, where):
    with pytest.raises(RulesError, match=rf"{re.escape(where)}: .* characters long; at most (200|750) are accepted"):
        read_rules(write(tmp_path, text))


@pytest.mark.parametrize("code", ["0123", "1:30", "0b101", "0x1F", "1_000", "12.50", "1e3", "007", ".inf", "22423"])
def test_unquoted_codes_are_read_as_typed(tmp_path, code):
    """YAML 1.1 would read these as 83, 90, 5, 31, 1000, 12.5, 1000.0, 7, inf: a code is the text written."""
    rules, _ = read_rules(
        write(tmp_path, f"block:\n  codes: [{code}]\npin:\n  - {{basket: {{code: {code}}}, item: {{code: A}}}}\n")
    )
    assert rules["block"]["codes"] == [code]
    assert rules["pin"][0]["basket"] == {"code": [code]}


@pytest.mark.parametrize(
    "factor,message",
    [
        ("1.0e+300", "must be from 0.001 to 1000, got 1.0e+300"),
        ("1001", "must be from 0.001 to 1000, got 1001"),
        ("1.0e-320", "must be from 0.001 to 1000, got 1.0e-320"),
    ],
)
def test_factors_are_bounded(tmp_path, factor, message):
    with pytest.raises(RulesError, match=re.escape(message)):
        read_rules(write(tmp_path, f"boost:\n  - {{code: A, factor: {factor}}}\n"))
    with pytest.raises(RulesError, match=re.escape(message)):
        read_rules(write(tmp_path, f"bury:\n  - {{code: A, factor: {factor}}}\n"))
    assert read_rules(write(tmp_path, "boost:\n  - {code: A, factor: 1000}\n"))[0]["boost"][0]["factor"] == 1000


def test_a_code_yaml_reads_as_a_boolean_or_a_date_is_refused_saying_to_quote_it(tmp_path):
    for code in ("yes", "off", "2024-01-01"):
        with pytest.raises(RulesError, match=r"block\.codes: expected a non-empty text .* \(put it in quotes\)$"):
            read_rules(write(tmp_path, f"block:\n  codes: [{code}]\n"))
    assert read_rules(write(tmp_path, 'block:\n  codes: ["yes", "2024-01-01"]\n'))[0]["block"]["codes"] == [
        "yes",
        "2024-01-01",
    ]

"""template.yaml (AWS SAM) read and written with its CloudFormation short-form tags (!Ref, !Sub, ...) kept: the one
reader of the template, for the local gateway, the Docker-free build (infra/build_lambda.py) and the tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass
class Tagged:
    """A value carrying a CloudFormation short-form tag, e.g. Tagged("!Ref", "AWS::NoValue")."""

    tag: str
    value: object


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads every "!" tag as a Tagged value."""


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes a Tagged value back with its tag."""


def _construct(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Tagged:
    if isinstance(node, yaml.ScalarNode):
        return Tagged("!" + suffix, loader.construct_scalar(node))
    if isinstance(node, yaml.SequenceNode):
        return Tagged("!" + suffix, loader.construct_sequence(node, deep=True))
    return Tagged("!" + suffix, loader.construct_mapping(node, deep=True))


def _represent(dumper: yaml.SafeDumper, data: Tagged) -> yaml.Node:
    if isinstance(data.value, list):
        return dumper.represent_sequence(data.tag, data.value)
    if isinstance(data.value, dict):
        return dumper.represent_mapping(data.tag, data.value)
    return dumper.represent_scalar(data.tag, str(data.value))


_Loader.add_multi_constructor("!", _construct)
_Dumper.add_representer(Tagged, _represent)


def parse_template(text: str) -> dict:
    """A SAM template's text as plain data, each tagged value a Tagged; yaml.YAMLError if it is not YAML."""
    return yaml.load(text, Loader=_Loader)


def read_template(path: Path) -> dict:
    """The SAM template at path as plain data, each tagged value a Tagged (OSError, yaml.YAMLError)."""
    return parse_template(path.read_text())


def dump_template(template: dict) -> str:
    """A template (as read_template gives it) as YAML text, its tags written back and its key order kept."""
    return yaml.dump(template, Dumper=_Dumper, sort_keys=False, width=120)


def plain(value: object) -> object:
    """value with its tags dropped ({!Ref x} becomes x), for reading fields that are plain in practice."""
    if isinstance(value, Tagged):
        return plain(value.value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def resolved(template: dict, value: object, parameters: dict[str, str] | None = None) -> object:
    """value with its conditions decided (!If, !Equals, !Not, !Ref of a parameter or condition) for the parameters'
    defaults, or the values given; other tags are left as they are."""
    given = {name: str(p.get("Default")) for name, p in template.get("Parameters", {}).items()} | (parameters or {})

    def walk(v: object) -> object:
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if not isinstance(v, Tagged):
            return v
        if v.tag == "!If":
            condition, yes, no = v.value
            return walk(yes if walk(template["Conditions"][condition]) else no)
        if v.tag == "!Equals":
            left, right = (walk(x) for x in v.value)
            return str(left) == str(right)
        if v.tag == "!Not":
            return not walk(v.value[0])
        if v.tag == "!Ref" and v.value in given:
            return given[v.value]
        return v

    return walk(value)

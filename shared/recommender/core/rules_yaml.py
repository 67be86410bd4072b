"""Reading a merchandising rules document from YAML text, as `make rules` reads a file and the console's text view
sends it: no aliases, numbers keeping the text they were written as, and one message naming the line and column of
a syntax error. Imported only where YAML is read (pyyaml is small, pure Python with an optional C part; the Lambda
layer ships it for the console's text view)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import yaml

from recommender.core.rules_form import RulesError


class _Loader(yaml.SafeLoader):
    """YAML as a rules file is read: no aliases (*name: one short line could stand for megabytes of text), and
    numbers keep the text they were written as, so an unquoted code is the code typed (0123, 1:30, 0b101 and 12.50
    would otherwise be the numbers 83, 90, 5 and 12.5)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise RulesError(
                f"line {mark.line + 1}, column {mark.column + 1}: aliases (*name) are not accepted in a rules file; "
                "write the values out"
            )
        return super().compose_node(parent, index)


class _Int(int):
    """A YAML integer and the text it was written as."""

    text: str


class _Float(float):
    """A YAML float and the text it was written as."""

    text: str


def _number(kind: type, construct: Callable) -> Callable:
    def build(loader: _Loader, node: yaml.ScalarNode) -> Any:
        value = kind(construct(loader, node))
        value.text = node.value
        return value

    return build


_Loader.add_constructor("tag:yaml.org,2002:int", _number(_Int, yaml.SafeLoader.construct_yaml_int))
_Loader.add_constructor("tag:yaml.org,2002:float", _number(_Float, yaml.SafeLoader.construct_yaml_float))


def load(text: str, name: str) -> Any:
    """The document of YAML text; RulesError "<name> is not valid YAML at line L, column C: problem" when it is
    not (name: the file's name, or how the console calls its text)."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader without aliases)
    except RulesError as err:  # an alias, refused where it is
        raise RulesError(f"{name}: {err.message}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        refusal = RulesError(f"{name} is not valid YAML{where}: {problem}")
        refusal.line = mark.line + 1 if mark else None  # where the console's text view marks it
        raise refusal from None


def line_of(text: str, place: str) -> int | None:
    """The line (from 1) of YAML text where a place of the document ("pin[0].position") is written, or of the
    nearest part of it that is; None when the text cannot be read or names no part of it."""
    try:
        node = yaml.compose(text, Loader=_Loader)  # noqa: S506 (a SafeLoader without aliases)
    except (yaml.YAMLError, RulesError):
        return None
    line = None
    for step in re.findall(r"[^.\[\]]+|\[\d+\]", place):
        if isinstance(node, yaml.MappingNode):
            found = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == step]
            if not found:
                break
            key, node = found[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and step.startswith("["):
            index = int(step[1:-1])
            if index >= len(node.value):
                break
            node = node.value[index]
            line = node.start_mark.line + 1
        else:
            break
    return line


def plain(value: Any) -> Any:
    """A loaded document as JSON can carry it: numbers as numbers, or as written when the number would say
    something else (0123, 12.50, .nan), dates as ISO text, anything else YAML builds (!!binary, !!set) as its repr."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, (_Int, _Float)):
        number = int(value) if isinstance(value, _Int) else float(value)
        return number if math.isfinite(number) and str(number) == value.text else value.text
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (date, datetime)):  # an unquoted date or time
        return value.isoformat()
    return repr(value)

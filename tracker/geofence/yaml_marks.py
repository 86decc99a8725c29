"""YAML documents read with their line marks, so that every problem can be reported as `file:line: path`.

Policy: documents are read with PyYAML's safe loader, YAML 1.2 booleans (`on:` is a key, not True) and
one document per file. A location is the tuple of keys and indexes from the root (`("rules", 0, "id")`);
`Where` turns it into the line of the deepest node that exists, so a missing key points at its parent.
Syntax errors raise `ConfigError` naming the file and line; repeated keys are reported, not merged.
"""

from __future__ import annotations

import re
from typing import Any, TypeAlias

import yaml

from tracker.errors import ConfigError

Loc: TypeAlias = tuple[str | int, ...]
_UNREADABLE = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans, so that a rule's `on:` key stays the string "on", not True; a
    value its tag cannot read (`!!int x`, `2026-02-30`) is a YAML error at its node, where PyYAML lets
    Python's ValueError, KeyError and the like through."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except _UNREADABLE as exc:
            kind = node.tag.rpartition(":")[2] or node.tag
            if isinstance(node, yaml.ScalarNode):
                shown = f"{node.value!r:.60}"
            else:
                shown = "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
            detail = f" ({exc})" if type(exc) is ValueError else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"{shown} is not a valid {kind}{detail}", node.start_mark
            ) from exc


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def read_document(path: str, text: str) -> tuple[yaml.Node | None, Any]:
    """(root node, Python value) of the one YAML document in `text`; (None, None) for an empty one.

    Raises ConfigError as `file:line: YAML syntax error: ...` (or `file:1: YAML error: ...`, or
    `file:line: YAML nested too deeply` past Python's recursion limit).
    """
    loader = None
    try:
        loader = _Loader(text)
        root = loader.get_single_node()
        return root, (loader.construct_document(root) if root is not None else None)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else 1
        detail = str(exc.problem or exc.context or exc)
        if exc.problem and exc.context:
            where = f" at line {int(exc.context_mark.line) + 1}" if exc.context_mark else ""
            detail += f" ({exc.context}{where})"
        raise ConfigError(f"{path}:{line}: YAML syntax error: {detail}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}:1: YAML error: {exc}") from exc
    except RecursionError:
        line = int(loader.get_mark().line) + 1 if loader is not None else 1
        raise ConfigError(f"{path}:{line}: YAML nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def dotted(loc: Loc) -> str:
    """`loc` as a YAML author reads it: `rules[0].fences[2]`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class Where:
    """Turns a location inside one YAML document (keys and indexes) into `file:line: path`."""

    def __init__(self, path: str, root: yaml.Node | None) -> None:
        self.path = path
        self.root = root

    def line(self, loc: Loc) -> int:
        """The line of the deepest node along `loc`: a key's own line for a mapping entry."""
        node = self.root
        line = _line(node) if node is not None else 1
        for part in loc:
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == part:
                        line, node = _line(key), value
                        break
                else:
                    return line
            elif (
                isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value)
            ):
                node = node.value[part]
                line = _line(node)
            else:
                return line
        return line

    def at(self, loc: Loc) -> str:
        """`file:line` of `loc`."""
        return f"{self.path}:{self.line(loc)}"

    def label(self, loc: Loc) -> str:
        """`file:line: path` of `loc`, the start of every message about it."""
        path = dotted(loc)
        return f"{self.at(loc)}: {path}" if path else self.at(loc)

    def error(self, loc: Loc, message: str) -> str:
        """`file:line: path: message`."""
        return f"{self.label(loc)}: {message}"


def duplicate_keys(path: str, root: yaml.Node | None) -> list[str]:
    """A `file:line: path: duplicate key` message for each repeated key: PyYAML silently keeps the last,
    and that is rarely meant."""
    found: list[tuple[int, Loc]] = []
    _walk(root, (), found, set())
    return [f"{path}:{line}: {dotted(loc)}: duplicate key '{loc[-1]}'" for line, loc in found]


def _walk(node: yaml.Node | None, loc: Loc, out: list[tuple[int, Loc]], done: set[int]) -> None:
    if id(node) in done:  # an alias: walked already (and aliases may nest exponentially or loop)
        return
    done.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and name in seen:
                out.append((_line(key), (*loc, name)))
            elif name is not None:
                seen.add(name)
            _walk(value, (*loc, name) if name else loc, out, done)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*loc, i), out, done)


def alias_line(text: str) -> int | None:
    """The line of the first YAML alias in `text`, None when there is none (or the text is no YAML:
    the parser reports that)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        for token in yaml.scan(text, Loader=loader):
            if isinstance(token, yaml.AliasToken):
                return int(token.start_mark.line) + 1
    except yaml.YAMLError:
        return None
    return None

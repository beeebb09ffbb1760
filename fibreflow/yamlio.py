"""The one bounded YAML reader: errors that name the file and line, and ``${VAR}`` expansion.

Every YAML input (``fibreflow.yaml``, SLA files, model scripts, profiles, pricing, feature
files) is read here, within limits that keep hostile input from costing more than a bounded
time and memory:

* at most ``MAX_BYTES`` of UTF-8 text (another encoding is named with the line of its first bad byte);
* collections nested at most ``MAX_DEPTH`` deep (deeper is refused before Python's recursion
  limit is near);
* at most ``MAX_NODES`` nodes *as expanded*: a node reached through an alias counts every time
  it is reached, so nested anchors that expand exponentially ("billion laughs") are refused as
  soon as the count passes the budget, long before they are built;
* an alias inside the collection it names (``a: &a [*a]``) is refused.

Every failure is a :class:`ConfigError` naming the file, and the line where it is known.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from fibreflow.errors import ConfigError, MissingEnvError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

MAX_BYTES = 4 * 1024 * 1024
"""Largest file the reader accepts (configs are kilobytes; a 3,000-feature list is ~300 KB)."""
MAX_DEPTH = 100
"""Deepest nesting of collections (mappings and lists) in one document."""
MAX_NODES = 200_000
"""Most nodes a document may have, counting a node reached through an alias each time it is reached."""

# (parent node number, key) -> (child node number, 1-based line); node 0 is the document's root
_LineIndex = Mapping[tuple[int, str], tuple[int, int]]


class LoadedYaml:
    """A parsed YAML document plus the line of every key path, for error messages."""

    def __init__(self, path: Path, data: Any, lines: _LineIndex | None = None) -> None:
        self.path = path
        self.data = data
        self._lines: _LineIndex = lines or {}

    def line_of(self, keys: Sequence[Any]) -> int | None:
        """The 1-based line where the deepest known prefix of ``keys`` is defined."""
        node, line = 0, None
        for key in keys:
            found = self._lines.get((node, str(key)))
            if found is None:
                break
            node, line = found
        return line

    def error(self, message: str, keys: Sequence[Any] = ()) -> ConfigError:
        """A ConfigError located at ``keys`` in this file."""
        key = ".".join(str(k) for k in keys) or None
        return ConfigError(message, path=str(self.path), line=self.line_of(keys), key=key)


class _LimitError(yaml.MarkedYAMLError):
    """A limit of this reader was passed at ``problem_mark``."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer counts depth and expanded nodes, and refuses recursive aliases."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._aliases = 0
        self._open: set[str] = set()  # anchors of the collections being composed
        self._sizes: dict[str, int] = {}  # anchor -> expanded nodes of its collection

    def _count(self, n: int, mark: Any) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            through = " (counting every node an alias reaches each time)" if self._aliases else ""
            raise _LimitError(f"more than {MAX_NODES} nodes{through}: the document is too large", mark)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise _LimitError(f"recursive alias *{event.anchor}: it refers to the collection it is in",
                                  event.start_mark)
            node = super().compose_node(parent, index)  # an undefined alias is its error
            self._aliases += 1
            self._count(self._sizes.get(str(event.anchor), 1), event.start_mark)
            return node
        before = self._nodes
        self._count(1, event.start_mark)
        collection = isinstance(event, yaml.CollectionStartEvent)
        if collection:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise _LimitError(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
            if event.anchor is not None:
                self._open.add(event.anchor)
        node = super().compose_node(parent, index)
        if collection:
            self._depth -= 1
            if event.anchor is not None:
                self._open.discard(event.anchor)
        if event.anchor is not None:
            self._sizes[event.anchor] = self._nodes - before
        return node

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:  # e.g. the timestamp 2024-02-30, a 5000-digit int
            raise yaml.constructor.ConstructorError(None, None, f"bad value: {exc}", node.start_mark) from None


def read_text(path: str | Path, *, what: str = "file", max_bytes: int = MAX_BYTES) -> str:
    """The UTF-8 text of ``path``, at most ``max_bytes``; any fault is a ConfigError naming the file."""
    p = Path(path)
    try:
        with p.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise ConfigError(f"{what} not found", path=str(p)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the {what}: {exc.strerror or exc}", path=str(p)) from None
    if len(raw) > max_bytes:
        raise ConfigError(f"the {what} is larger than {max_bytes // 1024} KiB", path=str(p))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - raw.rfind(b"\n", 0, exc.start)
        raise ConfigError(f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at column {column} cannot be decoded; "
                          f"save the {what} as UTF-8", path=str(p), line=line) from None


def _index_lines(root: yaml.Node) -> dict[tuple[int, str], tuple[int, int]]:
    """Each node's children by key with their line; a node reached through several aliases is
    indexed once, so this costs no more than the document's distinct nodes."""
    out: dict[tuple[int, str], tuple[int, int]] = {}
    numbers = {id(root): 0}
    stack = [root]
    while stack:
        node = stack.pop()
        number = numbers[id(node)]
        if isinstance(node, yaml.MappingNode):
            children = [(str(k.value) if isinstance(k, yaml.ScalarNode) else "?", k, v) for k, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            children = [(str(i), v, v) for i, v in enumerate(node.value)]
        else:
            continue
        for key, marked, child in children:
            if id(child) not in numbers:
                numbers[id(child)] = len(numbers)
                stack.append(child)
            out[number, key] = (numbers[id(child)], marked.start_mark.line + 1)  # a repeated key: the last wins, as in the data
    return out


def load_yaml(path: str | Path) -> LoadedYaml:
    """Parse a YAML file within the reader's limits; any fault raises ConfigError with the file and line."""
    p = Path(path)
    text = read_text(p)
    loader = None
    try:
        loader = _BoundedLoader(text)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.reader.ReaderError as exc:  # a control character: named with its line, not a position
        raise ConfigError(f"malformed YAML: character #x{exc.character:04x} is not allowed in YAML text",
                          path=str(p), line=text.count("\n", 0, exc.position) + 1) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        kind = "" if isinstance(exc, _LimitError) else "malformed YAML: "
        raise ConfigError(f"{kind}{exc.problem or exc}", path=str(p), line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML: {exc}", path=str(p)) from None
    except RecursionError:  # a guard: the depth limit keeps the composer far from it
        raise ConfigError(f"nested too deeply (more than {MAX_DEPTH} levels)", path=str(p)) from None
    finally:
        if loader is not None:
            loader.dispose()
    return LoadedYaml(p, data, _index_lines(node) if node is not None else None)


def expand_env(value: str, *, env: Mapping[str, str] | None = None, path: str | None = None,
               key: str | None = None) -> str:
    """Replace ``${VAR}`` / ``${VAR:-default}``; an unset variable without default is an error."""
    environ = os.environ if env is None else env

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise MissingEnvError(name, path=path, key=key)

    return _ENV_REF.sub(sub, value)


def env_refs(value: str) -> list[str]:
    """Names of the environment variables a string refers to."""
    return [m.group(1) for m in _ENV_REF.finditer(value)]


@contextmanager
def environ_overlay(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the ``with`` block and restore the previous ones after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old

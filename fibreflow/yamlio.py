"""YAML loading with errors that name the file and line, and ``${VAR}`` expansion."""

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


class LoadedYaml:
    """A parsed YAML document plus the line of every key path, for error messages."""

    def __init__(self, path: Path, data: Any, lines: dict[tuple[str, ...], int]) -> None:
        self.path = path
        self.data = data
        self._lines = lines

    def line_of(self, keys: Sequence[Any]) -> int | None:
        """The 1-based line where the deepest known prefix of ``keys`` is defined."""
        parts = tuple(str(k) for k in keys)
        while parts:
            if parts in self._lines:
                return self._lines[parts]
            parts = parts[:-1]
        return None

    def error(self, message: str, keys: Sequence[Any] = ()) -> ConfigError:
        """A ConfigError located at ``keys`` in this file."""
        key = ".".join(str(k) for k in keys) or None
        return ConfigError(message, path=str(self.path), line=self.line_of(keys), key=key)


def _index_lines(node: yaml.Node, prefix: tuple[str, ...], out: dict[tuple[str, ...], int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            out[path] = key_node.start_mark.line + 1
            _index_lines(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = (*prefix, str(i))
            out[path] = item.start_mark.line + 1
            _index_lines(item, path, out)


def load_yaml(path: str | Path) -> LoadedYaml:
    """Parse a YAML file; malformed YAML raises ConfigError with the file and line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", path=str(p)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(p)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(f"malformed YAML: {exc.problem or exc}", path=str(p), line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML: {exc}", path=str(p)) from None
    lines: dict[tuple[str, ...], int] = {}
    if node is not None:
        _index_lines(node, (), lines)
    return LoadedYaml(p, data, lines)


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

"""Reading domain files: YAML in, a validated :class:`DomainConfig` or errors with positions.

PyYAML's composer keeps every node's line and column; pydantic reports each
problem with a key path. Walking the path through the node tree gives
``FILE:LINE:COLUMN: message`` for every error, not just the first.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from pvtui.domain.schema import WORKLOAD_TYPES, CrossFieldError, DomainConfig
from pvtui.errors import PvtuiError


@dataclass(frozen=True)
class Problem:
    """One error in a domain file, 1-based line and column."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


class DomainFileError(PvtuiError):
    """A domain file that cannot be used; ``problems`` lists every error found."""

    def __init__(self, path: str, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(f"Invalid domain file {path}", "\n".join(str(p) for p in problems))


def load_domain_file(path: str | os.PathLike[str]) -> DomainConfig:
    """Load and validate one file; relative ``kernel:`` paths resolve against its folder."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DomainFileError(path, [Problem(path, 1, 1, f"cannot read the file: {exc}")]) from None
    config = parse_domain_text(text, path)
    if config.kernel and not os.path.isabs(os.path.expanduser(config.kernel)):
        resolved = os.path.join(os.path.dirname(os.path.abspath(path)), config.kernel)
        config = config.model_copy(update={"kernel": resolved})
    return config


def parse_domain_text(text: str, path: str = "<string>") -> DomainConfig:
    """Validate YAML text; raise :class:`DomainFileError` naming every problem."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        why = getattr(exc, "problem", None) or str(exc)
        raise DomainFileError(path, [Problem(path, line, column, f"not valid YAML: {why}")]) from None
    if node is None:
        raise DomainFileError(path, [Problem(path, 1, 1, "the file is empty; a domain needs at least name:")])
    if not isinstance(node, yaml.MappingNode):
        raise DomainFileError(path, [_at(path, node, "a domain file is a mapping of keys (name: web, vcpus: 2, ...)")])
    duplicates = list(_duplicate_keys(node, path))
    if duplicates:
        raise DomainFileError(path, duplicates)
    data = yaml.safe_load(text)
    try:
        return DomainConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(path, node, error) for error in exc.errors(include_url=False)]
        raise DomainFileError(path, sorted(problems, key=lambda p: (p.line, p.column))) from None


def _at(path: str, node: yaml.Node, message: str) -> Problem:
    return Problem(path, node.start_mark.line + 1, node.start_mark.column + 1, message)


def _duplicate_keys(node: yaml.Node, path: str) -> Iterator[Problem]:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                yield _at(path, key, f"duplicate key {key.value!r}; each key may appear once")
            seen.add(key.value)
            yield from _duplicate_keys(value, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _duplicate_keys(item, path)


def _walk(root: yaml.Node, loc: tuple[int | str, ...]) -> tuple[yaml.Node, yaml.Node | None]:
    """Follow a pydantic location through the YAML tree: (value node, key node)."""
    node, key_node = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    node, key_node = value, key
                    break
            # parts absent from the mapping are union tags (workload "cpu"): skip
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node, key_node = node.value[part], None
    return node, key_node


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The schema model that owns the last key of ``loc`` (for "did you mean")."""
    from pvtui.domain import schema

    if loc and loc[0] == "workload" and len(loc) >= 2:
        by_tag: dict[str, type[BaseModel]] = {
            "idle": schema.IdleWorkload,
            "cpu": schema.CpuWorkload,
            "memory": schema.MemoryWorkload,
            "bursty": schema.BurstyWorkload,
            "chatty": schema.ChattyWorkload,
            "selftest": schema.SelftestWorkload,
            "bench": schema.BenchWorkload,
        }
        return by_tag.get(str(loc[1]), schema.IdleWorkload)
    return DomainConfig


def _problem(path: str, root: yaml.Node, error: ErrorDetails) -> Problem:
    loc = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, CrossFieldError):
        node, key = _walk(root, (cause.field,))
        return _at(path, key or node, str(cause))
    node, key = _walk(root, loc)
    name = ".".join(str(p) for p in loc if not (loc and loc[0] == "workload" and p in WORKLOAD_TYPES and p != loc[-1]))
    value = error.get("input")
    if kind == "extra_forbidden":
        allowed = list(_model_at(loc[:-1]).model_fields)
        bad = str(loc[-1])
        guess = difflib.get_close_matches(bad, allowed, n=1)
        hint = f"did you mean {guess[0]!r}? " if guess else ""
        return _at(path, key or node, f"unknown key {bad!r}; {hint}allowed: {', '.join(allowed)}")
    if kind == "missing":
        return _at(path, node, f"missing required key {str(loc[-1])!r}")
    if kind == "union_tag_invalid" or kind == "union_tag_not_found":
        return _at(path, node, f"workload type must be one of: {', '.join(WORKLOAD_TYPES)}")
    if kind == "literal_error":
        return _at(path, node, f"{name}: {value!r} is not allowed; use one of: {ctx.get('expected')}")
    if kind in ("less_than_equal", "greater_than_equal", "less_than", "greater_than"):
        bound = {
            "less_than_equal": "at most",
            "greater_than_equal": "at least",
            "less_than": "below",
            "greater_than": "above",
        }[kind]
        limit = next(iter(ctx.values()))
        return _at(path, node, f"{name}: {value!r} is out of range; it must be {bound} {limit}")
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return _at(path, node, f"{name}: expected a whole number, got {value!r}")
    if kind in ("bool_type", "bool_parsing"):
        return _at(path, node, f"{name}: expected true or false, got {value!r}")
    if kind in ("string_type",):
        return _at(path, node, f"{name}: expected text, got {value!r}")
    if kind == "string_pattern_mismatch" and loc == ("name",):
        return _at(path, node, f"name: {value!r} is not a valid name; use letters, digits, '_', '.', '-' (max 64)")
    if kind == "model_type" or kind == "dict_type":
        return _at(path, node, f"{name or 'the file'}: expected a mapping of keys")
    message = str(cause) if cause is not None else error["msg"]
    return _at(path, node, f"{name}: {message}")

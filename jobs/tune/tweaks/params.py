"""Parameter mode: a script that reads PUSHTUNE_PARAMS (through `jobs.kit.params(**defaults)`)
gets its tweaks as parameter changes; its source is left alone. Read with `ast`, never run."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobs.kit import overlay_params
from jobs.tune.tweaks.numeric import Change, format_value
from jobs.tune.tweaks.source import parse


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _kit_params_spellings(tree: ast.Module) -> set[str]:
    """How this file can spell jobs.kit.params, from its imports."""
    spellings: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "jobs.kit":
                    spellings.add(f"{alias.asname}.params" if alias.asname else "jobs.kit.params")
                elif alias.name == "jobs":
                    spellings.add(f"{alias.asname or 'jobs'}.kit.params")
        elif isinstance(node, ast.ImportFrom) and not node.level:
            for alias in node.names:
                if node.module == "jobs" and alias.name == "kit":
                    spellings.add(f"{alias.asname or 'kit'}.params")
                elif node.module == "jobs.kit" and alias.name == "params":
                    spellings.add(alias.asname or "params")
    return spellings


def _kit_params_calls(tree: ast.Module) -> list[ast.Call]:
    spellings = _kit_params_spellings(tree)
    calls = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _dotted(node.func) in spellings
    ]
    return sorted(calls, key=lambda call: (call.lineno, call.col_offset))


def _is_params_name(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value == "PUSHTUNE_PARAMS"


def _reads_params_variable(tree: ast.Module) -> bool:
    """os.environ["PUSHTUNE_PARAMS"], os.environ.get("PUSHTUNE_PARAMS"), os.getenv("PUSHTUNE_PARAMS")."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_params_name(node.slice):
            if (_dotted(node.value) or "").split(".")[-1] == "environ":
                return True
        if isinstance(node, ast.Call) and node.args and _is_params_name(node.args[0]):
            name = _dotted(node.func) or ""
            if name.endswith("environ.get") or name.split(".")[-1] == "getenv":
                return True
    return False


def reads_params(source: str) -> bool:
    """True when the script takes its hyperparameters from PUSHTUNE_PARAMS."""
    tree = parse(source)
    return bool(_kit_params_calls(tree)) or _reads_params_variable(tree)


_NOT_LITERAL = object()
_SCALARS = (int, float, str, bool, type(None))


def _literal(node: ast.expr) -> Any:
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(item, _SCALARS) for item in value):
        return list(value)
    return _NOT_LITERAL


def declared_params(source: str) -> dict:
    """The literal keyword defaults of the script's jobs.kit.params(...) call(s); {} when none."""
    declared: dict = {}
    for call in _kit_params_calls(parse(source)):
        for keyword in call.keywords:
            if keyword.arg is not None and (value := _literal(keyword.value)) is not _NOT_LITERAL:
                declared[keyword.arg] = value
    return declared


@dataclass(frozen=True)
class ParamForm:
    """A tweak as a parameter change: the first of `keys` (lower case) that the script declares
    or is given gets `change(value)`; `also` sets companion parameters, when present, alongside
    (a new optimizer brings its own learning rate)."""

    keys: tuple[str, ...]
    change: Change
    also: Mapping[tuple[str, ...], Any] = field(default_factory=dict)  # keys -> value to set


@dataclass(frozen=True)
class ParamChange:
    params: dict
    description: str
    old: Any
    new: Any


def _find(merged: dict, keys: tuple[str, ...]) -> str | None:
    return next((k for wanted in keys for k in merged if k.lower() == wanted), None)


def change_params(form: ParamForm, source: str, params: dict) -> ParamChange | None:
    """The form applied to the script's declared defaults overlaid with `params` (as
    `kit.params` overlays them); None when no key is there or the change does not apply."""
    merged = overlay_params(declared_params(source), params)
    key = _find(merged, form.keys)
    if key is None:
        return None
    old, new = merged[key], form.change(merged[key])
    if new is None or new == old:
        return None
    changed = {key: new}
    for keys, value in form.also.items():
        if (other := _find(merged, keys)) is not None and merged[other] != value:
            changed[other] = value
    words = ", ".join(f"{k} {format_value(merged[k])} → {format_value(v)}" for k, v in changed.items())
    return ParamChange({**merged, **changed}, f"set {words} (parameter)", old, new)

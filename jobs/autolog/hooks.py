"""Post-import hooks: run a function right after a module is first imported, never before.

`when_imported("keras", patch)` calls `patch(module)` once `keras` has finished importing (at
once if it already has). A script that never imports the library pays nothing: the finder only
looks at names it was asked about, and otherwise steps aside.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from collections.abc import Callable
from types import ModuleType

Hook = Callable[[ModuleType], None]

_hooks: dict[str, list[Hook]] = {}
_lock = threading.RLock()
_finder: _PostImportFinder | None = None


def when_imported(name: str, hook: Hook) -> None:
    """Call `hook(module)` after `name` is imported (now, when it already is)."""
    global _finder
    with _lock:
        module = sys.modules.get(name)
        if module is not None and not _importing(module):
            _call(hook, module)
            return
        _hooks.setdefault(name, []).append(hook)
        if _finder is None:
            _finder = _PostImportFinder()
            sys.meta_path.insert(0, _finder)


def _importing(module: ModuleType) -> bool:
    spec = getattr(module, "__spec__", None)
    return bool(spec and getattr(spec, "_initializing", False))


def _call(hook: Hook, module: ModuleType) -> None:
    try:
        hook(module)
    except Exception as exc:  # capture never breaks the user's script
        print(f"[pushtune] autolog: could not instrument {module.__name__}: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for a hooked name, asks the other finders for the spec and wraps
    its loader so the hooks run after the module's code has run."""

    def __init__(self) -> None:
        self._searching: set[str] = set()

    def find_spec(self, fullname, path, target=None):
        if fullname not in _hooks or fullname in self._searching:
            return None
        self._searching.add(fullname)
        try:
            spec = None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        finally:
            self._searching.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _HookedLoader(spec.loader, fullname)
        return spec


class _HookedLoader(importlib.abc.Loader):
    def __init__(self, loader, name: str):
        self._loader, self._name = loader, name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        with _lock:
            hooks = _hooks.pop(self._name, [])
        for hook in hooks:
            _call(hook, module)

    def __getattr__(self, name):  # get_source, get_filename, is_package, … as the real loader has them
        return getattr(self._loader, name)

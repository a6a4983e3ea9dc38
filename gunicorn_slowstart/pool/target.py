"""A long worker's target, ``"package.module:function"`` or a callable: checked in the
master without importing it (``check_target``: a missing module or name is one clear
error before any fork), loaded in the long worker (``load_target``), where the
expensive import belongs.  The template (``template.py``) loads its hook the same way.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
from collections.abc import Callable
from typing import Any


def check_target(target: str | Callable) -> None:
    """Refuse a target that cannot be found, without importing it in the master.

    Importing would run the expensive module in the master (and every fork
    would then inherit it); ``find_spec`` and a look at the module's source
    find a missing module or name before any fork.
    """
    if callable(target):
        return
    module_name, _, attr = target.partition(":")
    spec = _find_spec(module_name)
    if spec is None:
        raise ValueError(f"no module named {module_name!r}")
    source = _source(spec)
    if source is not None and not _defines(source, attr.split(".")[0]):
        raise ValueError(f"module {module_name!r} defines no {attr!r}")


def _find_spec(dotted: str):
    """``find_spec`` that does not import parent packages (the stdlib one does)."""
    parts = dotted.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level name imports nothing
        for depth in range(1, len(parts)):
            locations = spec.submodule_search_locations if spec is not None else None
            if locations is None:
                return None
            spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: depth + 1]), list(locations))
    except (ImportError, ValueError):
        return None
    return spec


def _source(spec) -> str | None:
    try:
        return spec.loader.get_source(spec.name)
    except (AttributeError, ImportError, OSError):
        return None


def _defines(source: str, name: str) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return True  # the import in the worker will report it with its traceback
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Name,)) and node.id == name and isinstance(node.ctx, ast.Store):
            return True
        if isinstance(node, ast.alias) and (node.asname or node.name.split(".")[0]) == name:
            return True
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            return True
    return False


def load_target(target: str | Callable) -> Callable:
    if callable(target):
        return target
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj

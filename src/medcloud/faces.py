"""Package faces whose names load on first use (PEP 562), for packages that `medcloud --help` imports but
whose code needs heavy third-party libraries (pydicom, numpy, FastAPI, SQLAlchemy, Flower)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_face"]


def lazy_face(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, importing `names[attr]` (a module) when `attr` is first read."""
    module_globals = importlib.import_module(package).__dict__

    def getattr_(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        module_globals[name] = value  # later reads skip __getattr__
        return value

    def dir_() -> list[str]:
        return sorted(set(module_globals) | set(names))

    return getattr_, dir_

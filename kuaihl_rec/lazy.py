"""Lazy package exports (PEP 562): a package's public names, imported from their submodules on
first use, so importing the package stays cheap (``kuaihl validate`` does not load torch)."""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable, List, Mapping, Tuple


def lazy_exports(package: str, exports: Mapping[str, str]) -> Tuple[Callable[[str], Any], List[str]]:
    """``(__getattr__, __all__)`` for ``package``, whose name ``n`` lives in ``package.<exports[n]>``::

        __getattr__, __all__ = lazy_exports(__name__, {"WindowConfig": "windows", ...})
    """

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(exports)

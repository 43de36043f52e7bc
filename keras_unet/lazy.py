"""Public names that load their module on first use (PEP 562).

A package lists `{name: module}`; importing the package then costs nothing,
and `package.name` imports the module behind the name the first time.
"""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str], namespace: dict):
    """Module-level `__getattr__` and `__dir__` for a package's public names.

    Args:
        package: The package's `__name__` (for error messages).
        exports: Public name -> module that defines it.
        namespace: The package's `globals()` (loaded names are kept there).

    Returns:
        `(__getattr__, __dir__)`, to assign in the package.
    """
    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value  # later accesses skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__

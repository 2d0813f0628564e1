"""Model families. Every module or package in this folder (except those whose name starts with
an underscore) is imported on first use of the registry, and registers its family there:
adding a family means adding one module here."""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        try:
            importlib.import_module(f"{__name__}.{_module.name}")
        except Exception as _err:
            # Name the broken family: otherwise every family looks broken.
            raise ImportError(
                f"model family module {__name__}.{_module.name} failed to import: {_err!r}; "
                "fix it or move it out of worldflux/models/"
            ) from _err

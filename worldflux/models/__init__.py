"""Model families. Every module or package in this folder is imported on first use of the
registry, and registers its family there: adding a family means adding one module here."""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

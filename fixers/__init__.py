"""The fixers: one libcst codemod per fix, each documented next to its code, found by discovery.

A fixer module here has ``CODES`` (the finding codes it fixes), ``ORDER`` (when its edits are
verified: fixers of one order are checked as one group, groups in ascending order),
``CHANGES_EXPORT`` (its edits change the exported graph, so a fixed model's smoke test must pass)
and ``plan(source, findings, context, names) -> list[Edit | Decline]``. :mod:`modelcheck.fix.run`
runs them, chooses the edits the flags allow and applies them with
:func:`modelcheck.fixers.base.apply_edits`. Adding a fixer is adding a module; nothing here lists them.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def discover_fixers() -> tuple[ModuleType, ...]:
    """Every module of this package that defines ``CODES`` and ``plan``, by ``ORDER`` then name."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "CODES") and callable(getattr(module, "plan", None)):
            found.append(module)
    return tuple(sorted(found, key=lambda module: (module.ORDER, module.__name__)))


FIXERS: tuple[ModuleType, ...] = discover_fixers()

FIXABLE_CODES: frozenset[str] = frozenset(code for fixer in FIXERS for code in fixer.CODES)



def _verify_groups(fixers: tuple[ModuleType, ...]) -> tuple[frozenset[str], ...]:
    by_order: dict[int, set[str]] = {}
    for fixer in fixers:
        by_order.setdefault(fixer.ORDER, set()).update(fixer.CODES)
    return tuple(frozenset(by_order[order]) for order in sorted(by_order))


#: the codes verified together, group by group (porting first: the rest may not build without it)
VERIFY_GROUPS: tuple[frozenset[str], ...] = _verify_groups(FIXERS)

#: codes whose edits change the exported graph: a fixed model's smoke test checks them
EXPORT_CODES: frozenset[str] = frozenset(code for fixer in FIXERS if fixer.CHANGES_EXPORT for code in fixer.CODES)

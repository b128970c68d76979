"""The fixers: one libcst codemod per fix, each documented next to its code.

Each fixer module has ``CODES`` (the finding codes it fixes) and ``plan(source, findings,
context, names) -> list[Edit | Decline]``. :mod:`modelcheck.fix.run` runs them, chooses the
edits the flags allow and applies them with :func:`modelcheck.fixers.base.apply_edits`.
"""

from __future__ import annotations

from types import ModuleType

from modelcheck.fixers import lambdas, pooling, porting, upsampling

FIXERS: tuple[ModuleType, ...] = (porting, lambdas, pooling, upsampling)

FIXABLE_CODES: frozenset[str] = frozenset(code for fixer in FIXERS for code in fixer.CODES)

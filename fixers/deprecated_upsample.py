"""MC205: the deprecated upsampling aliases renamed to ``F.interpolate``.

``F.upsample``, ``F.upsample_nearest`` and ``F.upsample_bilinear`` warn on every call; each is
``F.interpolate`` with fixed arguments (``upsample_bilinear`` means ``mode="bilinear",
align_corners=True``), so the rename spells those arguments out. *Safe*, the same computation by
construction, and the exported graph does not change. Called through an alias or imported by
name, the call is left for a hand edit.
"""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst
from modelcheck.findings import Finding
from modelcheck.fixers.base import Applicability, Decision, Decline, Edit, Exactness, FixContext, Names
from modelcheck.rules import upsampling
from modelcheck.static.source import SourceFile

CODES = ("MC205",)
#: verified with the lambdas, before the fixes that change the exported graph
ORDER = 1
CHANGES_EXPORT = False


def plan(source: SourceFile, findings: Sequence[Finding], context: FixContext, names: Names) -> list[Decision]:
    """Edits or Declines for the MC205 findings in ``source``."""
    lines = {finding.location.line for finding in findings if finding.code in CODES}
    return [_rename(source, call, line) for call, facts in upsampling.extract(source)
            if facts.deprecated and (line := source.location(call).line) in lines]


_RENAMES = {
    "torch.nn.functional.upsample": "",
    "torch.nn.functional.upsample_nearest": 'mode="nearest"',
    "torch.nn.functional.upsample_bilinear": 'mode="bilinear", align_corners=True',
}


def _rename(source: SourceFile, call: cst.Call, line: int) -> Decision:
    api = source.resolves_to(call.func, tuple(_RENAMES))
    if api is None or not isinstance(call.func, cst.Attribute):
        return Decline("MC205", line, "called through an alias or imported by name; rename it by hand")
    if any(arg.star for arg in call.args):
        return Decline("MC205", line, "the call passes *args or **kwargs; rename it by hand")
    extra = _RENAMES[api]

    def rewrite(node: cst.CSTNode) -> cst.CSTNode:
        assert isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute)
        func = node.func.with_changes(attr=cst.Name("interpolate"))
        args = list(node.args)
        if extra:
            added = cst.parse_expression(f"f(_, {extra})")
            assert isinstance(added, cst.Call)
            if args:
                args[-1] = args[-1].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
            args.extend(added.args[1:])
        return node.with_changes(func=func, args=args)

    short = api.rsplit(".", 1)[-1]
    summary = f"F.{short}(...) -> F.interpolate(...{', ' + extra if extra else ''})"
    return Edit("MC205", line, summary, Applicability.SAFE, Exactness.BY_CONSTRUCTION,
                reason=f"F.{short} calls F.interpolate with exactly these arguments",
                rewrites=((id(call), rewrite),), anchors=(call,))



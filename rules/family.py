"""A rule family: everything modelcheck knows about one construct, in one object.

A family module in ``rules/`` defines ``FAMILY = Family(...)`` and is found by
:func:`discover_families` — there is no list to edit. The family owns the construct end to end:

- **static**: ``trigger`` (a regex the pre-screen runs on code with strings and comments masked
  out; a statement with no match cannot hold a finding, so libcst never parses it) and
  ``extract`` (a libcst extractor of ``(node, facts)`` pairs);
- **live modules**: ``layer_apis`` (the torch layer classes it is about) and ``layer_facts``
  (facts read from a built module) — the dynamic pass's module walk;
- **traced calls**: ``call_apis`` (functions whose calls the trace records) and ``call_facts``
  (facts from one call's arguments);
- **description**: ``facts_type`` (facts travel between processes as JSON of its fields) and
  ``describe`` (the live values a rule decided on, for notes);
- **rules** with their verdict per target and the stage outcomes they predict
  (:attr:`~modelcheck.rules.base.Rule.predicts`), and ``failing_ops`` (an ONNX/Caffe2 operator
  named in a runtime error that is this family's construct).

The fixers of a family's codes live in ``fixers/`` and are found the same way. Everything a
family does at run time with torch (``layer_facts``, ``call_facts``) runs in the child and gets
torch objects; a family module itself never imports torch.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelcheck.rules.base import Rule


def _no_facts(*_: Any) -> None:
    return None


@dataclass(frozen=True)
class Family:
    """One construct's rules, extractors and descriptions (see the module docstring)."""

    name: str
    rules: tuple[Rule, ...]
    facts_type: type
    trigger: Any  # a compiled regex, or an object with the same search/finditer
    extract: Callable[[Any], Iterable[tuple[Any, Any]]]
    describe: Callable[[Any], str]
    #: defs and classes nested in functions are hot too (MC102/MC103 have no word to match)
    nested_defs: bool = False
    layer_apis: frozenset[str] = frozenset()
    layer_facts: Callable[[Any, str], Any] = _no_facts
    #: the calls a family's layers make are traced as well, at the layer's construction site and under
    #: its API name: for facts only the call knows (the input's size)
    layer_calls: bool = False
    call_apis: frozenset[str] = frozenset()
    #: (api, positional args, keyword args, tracing) → facts or None
    call_facts: Callable[[str, tuple[Any, ...], Mapping[str, Any], bool], Any] = _no_facts
    failing_ops: re.Pattern[str] | None = None
    #: a family that also lists APIs other families own (MC5xx, from the measured operator table):
    #: those families' facts and findings come first, and its rules speak for such an API only at the
    #: targets none of the owner's rules has a verdict for
    fallback: bool = False
    codes: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", frozenset(rule.code for rule in self.rules))


def discover_families(package: Any = None) -> tuple[Family, ...]:
    """Every ``FAMILY`` defined by a module of ``package`` (``modelcheck.rules``), by first code."""
    if package is None:
        package = importlib.import_module(__name__.rpartition(".")[0])
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        family = getattr(module, "FAMILY", None)
        if isinstance(family, Family):
            found.append(family)
    return tuple(sorted(found, key=lambda family: min(family.codes)))


def plain(value: Any) -> Any:
    """A live value as plain numbers and tuples (a 1-element tensor → its number), for facts."""
    if hasattr(value, "numel") and hasattr(value, "tolist"):  # a tensor, without importing torch
        return value.item() if value.numel() == 1 else tuple(value.tolist())
    if isinstance(value, (list, tuple)):
        return tuple(plain(v) for v in value)
    return value


def bind_call(params: tuple[str, ...], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A traced call's arguments by parameter name."""
    return {**dict(zip(params, args, strict=False)), **kwargs}


def is_layer(api: str) -> bool:
    """``torch.nn.MaxPool2d`` is a layer class; ``torch.nn.functional.max_pool2d``, ``torch.max_pool2d`` are not."""
    return api.startswith("torch.nn.") and not api.startswith("torch.nn.functional.")

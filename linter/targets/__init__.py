"""Targets: where the model is going decides how bad a finding is and which runtimes check it.

The rules read a :class:`Target`: a name, an opset and an exporter. What a name means is that
target's :class:`Profile`: default opset, the exporters it can take, its export settings, the
smoke-test stages it adds after the export, its runtime's install step, status and doctor
check, the files it leaves. Each profile is the module-level ``PROFILE`` of one module in this
package (``caffe2.py``, ``onnx.py``), found by :func:`discover` at import: adding a target is
adding a module, and nothing here lists them.

Importing this package imports every profile module, and the ``--static-only`` pre-commit path
imports it: profile modules import torch, onnx, numpy and their runtime only inside functions.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from modelcheck.smoke.stages import ExportContext, Outcome, StageContext

EXPORTERS = ("torchscript", "dynamo")
DYNAMO_MIN_OPSET = 18
#: what torch.onnx exports
OPSETS = (7, 23)
#: the export stage's file, in the artifacts folder (with its external data when over 2 GB)
MODEL_FILE = "model.onnx"
EXPORT_ARTIFACTS = (MODEL_FILE, "model.onnx.data")
PIP_HINT = "pip install 'modelcheck[runtime]'"


class TargetError(ValueError):
    """A target/opset/exporter combination that cannot be honoured."""


class InstallError(RuntimeError):
    """A target's runtime cannot be installed here; the message is a one-line reason."""


@dataclass(frozen=True)
class RuntimeStatus:
    """Whether a target's runtime is usable here (a cheap look, no process started), and if not, why."""

    installed: bool
    version: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class DoctorRun:
    """What a profile's doctor check saw running the one-conv model: its outputs, or why there are none."""

    outputs: list[Any] | None
    detail: str = ""  # a note when it ran ("converted in 0.31 s"), else the reason it did not
    version: str | None = None  # the runtime's version when only the running runtime knows it
    fix: str = ""  # what to run when this failure has its own remedy (else the profile's repair_hint)
    #: the target converts here but has no runtime to run on (Core ML predicts on macOS only): works
    converted_only: bool = False


@dataclass(frozen=True)
class Stage:
    """One smoke-test stage after the export, as the report names it.

    ``run`` is called in the smoke child (:mod:`modelcheck.smoke.job`) with a
    :class:`~modelcheck.smoke.stages.StageContext` and returns an ``Outcome``; a stage that
    raises becomes ``failed`` ("modelcheck could not run <label>: ...").
    """

    name: str  # "onnxruntime": the stage's name in reports
    label: str  # "ONNX Runtime": for sentences
    run: Callable[[StageContext], Outcome]
    after: tuple[str, ...] = ()  # stages that must pass first, else this one is skipped ("onnx_check failed")
    needs_reference: bool = True  # runs once PyTorch eager's outputs exist (and fails if there are none)
    background: bool = False  # starts right after the export, in a thread, while the others run


@dataclass(frozen=True)
class TargetEnv:
    """A target whose converter and runtime live in a virtual environment of their own.

    Used where a target's packages pin a torch other than the user's (ExecuTorch 1.4.1 pins
    torch 2.13.0) or are heavy: ``modelcheck --install NAME`` creates the environment with
    ``requirements`` (pins for a machine come from pip's own ``PIP_CONSTRAINT``) and the smoke job
    of that target runs in its interpreter (:mod:`modelcheck.runtimes.envs`).
    """

    requirements: tuple[str, ...]  # what pip installs there, e.g. ("torch", "executorch")
    imports: tuple[str, ...]  # modules that must import there for the target to count as installed
    version_of: str  # the distribution whose version the doctor shows


@dataclass(frozen=True, eq=False)
class Profile:
    """Everything a target name means; one per module of this package, as its ``PROFILE``."""

    name: str  # --target NAME
    runtime: str  # the runtime it is checked with, as the doctor lists it: "onnxruntime", "caffe2"
    runtime_label: str  # "ONNX Runtime", "Caffe2"
    default_opset: int
    stages: tuple[Stage, ...]  # in the order they run and are reported, after "export"
    status: Callable[[Path | None], RuntimeStatus]  # parent side, cheap: is the runtime here?
    doctor: Callable[[Path, dict[str, Any], float], DoctorRun]  # child side: (one-conv .onnx, feeds, timeout)
    install: Callable[[Path | None, Callable[[str], None]], RuntimeStatus] | None = None  # raises InstallError
    install_hint: str = PIP_HINT  # what to run when the runtime is missing
    repair_hint: str = ""  # what to run when it is there but does not work (default: install_hint)
    exporters: tuple[str, ...] = EXPORTERS  # the first is the default
    exporter_reason: str = ""  # why only those exporters, for the error message
    export_options: Mapping[str, Any] = field(default_factory=dict)  # TorchScript torch.onnx.export keywords
    artifacts: tuple[str, ...] = ()  # files its stages write into the artifacts folder
    #: False for targets that do not go through ONNX (ExecuTorch, LiteRT, ncnn): no opset, and the
    #: ``export`` stage is their own converter
    onnx: bool = True
    #: the ``export`` stage of a non-ONNX target, run in the smoke child: model → its file (``.pte``)
    export: Callable[[ExportContext], Path] | None = None
    export_label: str = ""  # "torch.export + XNNPACK": how a non-ONNX target exports, for labels
    env: TargetEnv | None = None  # its own virtual environment, when it has one
    #: runs the export's file on the target's runtime: (file, feeds by input name) → outputs (numpy);
    #: what a non-ONNX target's stage and its doctor check call
    run_file: Callable[[Path, dict[str, Any]], list[Any]] | None = None
    #: its tensors have no batch axis (ncnn): its converter infers the batch axis from the layers
    #: before an op, so the operator table measures its probes behind an identity convolution
    batchless: bool = False

    def stage_names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)

    def all_stages(self) -> tuple[str, ...]:
        """Every stage a smoke report of this target lists, ``export`` first."""
        return ("export", *self.stage_names())


@dataclass(frozen=True)
class Target:
    """Exporter settings plus the runtime that must run the result: the value every rule reads.

    ``caffe2`` is the seed's path: TorchScript exporter, opset 9, initializers kept as inputs,
    checked by a real Caffe2 ONNX backend. ``onnx`` is checked by ONNX Runtime (CPU).
    """

    name: str
    opset: int
    exporter: str = "torchscript"

    @property
    def profile(self) -> Profile:
        return PROFILES[self.name]

    @property
    def runtime(self) -> str:
        return self.profile.runtime

    @property
    def onnx(self) -> bool:
        """Whether the target exports ONNX (and so has an opset rules can read)."""
        return self.profile.onnx

    @property
    def members(self) -> tuple[Target, ...]:
        return (self,)

    @property
    def label(self) -> str:
        if not self.onnx:
            return f"{self.name} ({self.profile.export_label or self.exporter})"
        return f"{self.name} (opset {self.opset}, {self.exporter} exporter)"


@dataclass(frozen=True)
class TargetSet:
    """Several targets checked in one run (``--target caffe2,executorch``).

    Rules see every member: a finding's severity is its worst over the members and it names the
    members it matters for. Code that needs one target (the fixers' choice of rewrite, labels)
    reads the first, the primary, through the same attributes a :class:`Target` has.
    """

    members: tuple[Target, ...]

    def __post_init__(self) -> None:
        if not self.members:
            raise TargetError("no target given")

    @property
    def primary(self) -> Target:
        return self.members[0]

    @property
    def name(self) -> str:
        return self.primary.name

    @property
    def opset(self) -> int:
        return self.primary.opset

    @property
    def exporter(self) -> str:
        return self.primary.exporter

    @property
    def onnx(self) -> bool:
        return self.primary.onnx

    @property
    def profile(self) -> Profile:
        return self.primary.profile

    @property
    def runtime(self) -> str:
        return self.primary.runtime

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.members)

    @property
    def label(self) -> str:
        return ", ".join(t.label for t in self.members)


def discover(package: ModuleType) -> dict[str, Profile]:
    """Every ``PROFILE`` defined by a module of ``package``, by target name (sorted): no hand-kept list."""
    found: dict[str, Profile] = {}
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        profile = getattr(importlib.import_module(info.name), "PROFILE", None)
        if profile is None:
            continue
        if not isinstance(profile, Profile):
            raise TypeError(f"{info.name}.PROFILE is a {type(profile).__name__}, not a modelcheck.targets.Profile")
        if profile.name in found:
            raise TypeError(f"{info.name} defines the target {profile.name!r} a second time")
        found[profile.name] = profile
    return dict(sorted(found.items()))


def stage_order(profiles: Iterable[Profile]) -> tuple[str, ...]:
    """``export``, then every profile's stages in their order, each once (first profile first)."""
    names = ["export"]
    for profile in profiles:
        names += [name for name in profile.stage_names() if name not in names]
    return tuple(names)


def get_profile(name: str) -> Profile:
    """The profile of a target name; a TargetError naming the known ones otherwise."""
    if name not in PROFILES:
        raise TargetError(f"unknown target {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def make_target(name: str = "caffe2", opset: int | None = None, exporter: str | None = None) -> Target:
    """Build a target, filling in the profile's defaults and refusing impossible combinations."""
    profile = get_profile(name)
    if not profile.onnx:
        if opset is not None or (exporter is not None and exporter not in profile.exporters):
            flag = "--opset" if opset is not None else "--exporter"
            raise TargetError(f"the {name} target does not export ONNX ({profile.export_label}): {flag} does not apply")
        return Target(name, 0, profile.exporters[0])
    exporter = exporter or profile.exporters[0]
    if exporter not in EXPORTERS:
        raise TargetError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    if exporter not in profile.exporters:
        why = f" ({profile.exporter_reason})" if profile.exporter_reason else ""
        raise TargetError(f"the {name} target needs the {' or '.join(profile.exporters)} exporter{why}")
    if opset is None:
        opset = max(profile.default_opset, DYNAMO_MIN_OPSET if exporter == "dynamo" else 0)
    if not OPSETS[0] <= opset <= OPSETS[1]:
        raise TargetError(f"opset {opset} is outside what torch.onnx exports ({OPSETS[0]}-{OPSETS[1]})")
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise TargetError(f"the dynamo exporter needs opset >= {DYNAMO_MIN_OPSET}, not {opset}")
    return Target(name, opset, exporter)


def split_names(values: Iterable[str]) -> list[str]:
    """``["caffe2,executorch", "ncnn"]`` (the flag given twice, or a list) → each name once, in order."""
    names: list[str] = []
    for value in values:
        names += [n.strip() for n in str(value).split(",") if n.strip() and n.strip() not in names]
    return names


def make_targets(names: Iterable[str], opset: int | None = None, exporter: str | None = None) -> TargetSet:
    """Targets for ``--target a,b``: ``--opset``/``--exporter`` go to the ONNX ones (an error if none is)."""
    names = split_names(names) or ["caffe2"]
    for name in names:
        get_profile(name)
    onnx_names = [n for n in names if PROFILES[n].onnx]
    if (opset is not None or exporter is not None) and not onnx_names:
        verb = "exports" if len(names) == 1 else "export"
        raise TargetError(f"--opset and --exporter apply to ONNX targets; {', '.join(names)} {verb} no ONNX")
    return TargetSet(tuple(make_target(n, opset if n in onnx_names else None,
                                       exporter if n in onnx_names else None) for n in names))


PROFILES: dict[str, Profile] = discover(sys.modules[__name__])
TARGET_NAMES = tuple(PROFILES)
DEFAULT_OPSET = {name: profile.default_opset for name, profile in PROFILES.items()}
#: every stage a smoke report lists, in order; a stage the target does not have is "skipped"
STAGES = stage_order(PROFILES.values())
#: every file the export and the profiles' stages may leave in an artifacts folder
ARTIFACTS = tuple(dict.fromkeys([*EXPORT_ARTIFACTS, *(a for p in PROFILES.values() for a in p.artifacts)]))

"""Plain data passed between the pipeline's stages: findings, locations, stage results.

Nothing here knows about torch, libcst or the terminal, so every stage and the reporter can
share it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelcheck.fix.records import FixRecord


class TextEnum(str, Enum):
    """A ``str`` enum that prints and formats as its value (``f"{status}"`` is ``passed``), so it
    still compares equal to, and reads like, the strings other code and the JSON use."""

    __str__ = str.__str__
    __format__ = str.__format__


class Evidence(TextEnum):
    """What saw a finding: the static pass, the dynamic pass (tracing), or both on the same construct."""

    STATIC = "static"
    DYNAMIC = "dynamic"
    BOTH = "both"


class StageStatus(TextEnum):
    """How one smoke-test stage ended."""

    PASSED = "passed"
    FAILED = "failed"  # raised an error (export refused, conversion failed)
    MISMATCH = "mismatch"  # ran, but outputs differ from PyTorch beyond atol/rtol (or in shape)
    CRASHED = "crashed"  # the child died (a segfault, an abort)
    TIMEOUT = "timeout"
    SKIPPED = "skipped"  # not run: an earlier stage failed, or the runtime is missing

    @property
    def bad(self) -> bool:
        return self in (StageStatus.FAILED, StageStatus.MISMATCH, StageStatus.CRASHED, StageStatus.TIMEOUT)


class Severity(str, Enum):
    """How bad a finding is for the chosen target; ordered error > warning > info."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"error": 3, "warning": 2, "info": 1}[self.value]

    def lowered(self) -> Severity:
        """One step milder: used when a value could not be known statically ("may ...")."""
        return {Severity.ERROR: Severity.WARNING}.get(self, Severity.INFO)


@dataclass(frozen=True, order=True)
class Location:
    """A span in a source file; lines and columns are 1-based, as editors and SARIF count."""

    path: str
    line: int
    column: int = 1
    end_line: int | None = None
    end_column: int | None = None


@dataclass(frozen=True)
class Finding:
    """One problem at one place.

    ``key`` identifies the construct independently of how it was found, so a static and a
    dynamic sighting of the same call merge into one finding with ``evidence == "both"``.
    """

    code: str
    message: str
    severity: Severity
    location: Location
    fixable: bool = False
    evidence: Evidence = Evidence.STATIC
    model: str | None = None
    module_path: str | None = None
    source_line: str | None = None
    #: False when a value the claim depends on was not known ("may ..."); tracing can settle it
    certain: bool = True
    #: the run's targets this finding matters for (empty: not tied to a target, e.g. a syntax error)
    targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if type(self.evidence) is not Evidence:  # "dynamic" from a caller that spells it as text
            object.__setattr__(self, "evidence", Evidence(self.evidence))

    def to_json(self) -> dict[str, Any]:
        loc = self.location
        return {
            "code": self.code,
            "path": loc.path,
            "line": loc.line,
            "column": loc.column,
            "end_line": loc.end_line if loc.end_line is not None else loc.line,
            "end_column": loc.end_column if loc.end_column is not None else loc.column,
            "severity": self.severity.value,
            "message": self.message,
            "fixable": self.fixable,
            "evidence": self.evidence.value,
            "model": self.model,
            "module_path": self.module_path,
            "certain": self.certain,
            "targets": list(self.targets),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        """Rebuild a finding sent back by a child process."""
        return cls(
            code=data["code"],
            message=data["message"],
            severity=Severity(data["severity"]),
            location=Location(
                data["path"], data["line"], data.get("column", 1),
                data.get("end_line"), data.get("end_column"),
            ),
            fixable=data.get("fixable", False),
            evidence=Evidence(data.get("evidence", Evidence.DYNAMIC)),
            model=data.get("model"),
            module_path=data.get("module_path"),
            certain=data.get("certain", True),
            targets=tuple(data.get("targets", ())),
        )

    def with_(self, **changes: Any) -> Finding:
        return replace(self, **changes)


@dataclass(frozen=True)
class StageResult:
    """The outcome of one smoke-test stage (export, onnx_check, onnxruntime, caffe2) of a model."""

    model: str
    name: str
    status: StageStatus
    seconds: float | None = None
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    detail: str = ""
    predicted_by: tuple[str, ...] = ()
    location: Location | None = None
    #: max |PyTorch value| of the output ``max_rel_diff`` is relative to (the output judged worst)
    scale: float | None = None
    #: the target whose smoke test this stage belongs to (``caffe2``, ``executorch``)
    target: str = ""
    #: the operator and ONNX node a bad stage's error names (``Pow``, ``/norm/Pow``), when it names them
    op: str | None = None
    node: str | None = None

    def __post_init__(self) -> None:
        if type(self.status) is not StageStatus:  # "passed" from a caller that spells it as text
            object.__setattr__(self, "status", StageStatus(self.status))

    @property
    def bad(self) -> bool:
        return self.status.bad

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["predicted_by"] = list(self.predicted_by)
        data["location"] = asdict(self.location) if self.location else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageResult:
        loc = data.get("location")
        return cls(
            model=data["model"], name=data["name"], status=StageStatus(data["status"]),
            seconds=data.get("seconds"), max_abs_diff=data.get("max_abs_diff"),
            max_rel_diff=data.get("max_rel_diff"), detail=data.get("detail", ""),
            predicted_by=tuple(data.get("predicted_by", ())),
            location=Location(**loc) if loc else None, scale=data.get("scale"),
            target=data.get("target", ""), op=data.get("op"), node=data.get("node"),
        )


@dataclass
class ModelResult:
    """What the dynamic pass learned about one model spec (filled by later stages)."""

    spec: str
    status: str  # "ok" | "failed" | "crashed" | "timeout" | "skipped"
    detail: str = ""
    parameters: int | None = None
    pickle: dict[str, Any] | None = None
    stages: list[StageResult] = field(default_factory=list)
    stage: str | None = None  # the dynamic-pass stage that failed: import/build/walk/pickle/forward
    traceback: str = ""  # the last lines of the failure's traceback (or of stderr for a crash)
    graph: dict[str, Any] | None = None  # graph capture: method, captured upsampling/pooling ops
    #: forward needs tensor inputs modelcheck was not given (``--input-shape A;B`` or ``--inputs``
    #: would): the forward stage "failed" for want of inputs, not by the model's fault
    needs_inputs: list[str] = field(default_factory=list)
    #: forward's non-tensor arguments that have no default and no value (``mode``): likewise
    needs_arguments: list[str] = field(default_factory=list)
    #: how the child got the model built: weight loads skipped, files ported in memory, missing
    #: packages stubbed (``modelcheck.models.building``), each with the user's file:line
    notes: list[str] = field(default_factory=list)
    #: the project files the child imported to build it (its own, a backbone package, a config)
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = {
            "spec": self.spec,
            "status": self.status,
            "detail": self.detail,
            "parameters": self.parameters,
            "pickle": self.pickle,
            "stage": self.stage,
            "traceback": self.traceback,
            "graph": self.graph,
        }
        if self.needs_inputs:
            data["needs_inputs"] = list(self.needs_inputs)
        if self.needs_arguments:
            data["needs_arguments"] = list(self.needs_arguments)
        if self.notes:
            data["notes"] = list(self.notes)
        return data


@dataclass
class Report:
    """Everything one run found; the reporter renders it, the CLI turns it into an exit code."""

    target: str  # the primary target (the first of ``targets``)
    opset: int
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # skipped files and the like
    models: list[ModelResult] = field(default_factory=list)
    files_checked: int = 0
    also_checked: list[str] = field(default_factory=list)  # files the dynamic pass led to (counted above)
    fixes: list[FixRecord] = field(default_factory=list)  # one record per fix (modelcheck.fix.records)
    diff: str = ""  # --diff: the unified diff --fix would write
    targets: list[str] = field(default_factory=list)  # every target of the run, primary first (else [target])
    #: static findings tracing dropped (trace.run.refute); not reported, but --fix's re-check keeps them dropped
    refuted: list[Finding] = field(default_factory=list)

    @property
    def stages(self) -> list[StageResult]:
        return [stage for model in self.models for stage in model.stages]

"""What the static-pass tests share: fixture paths, `# expect:` markers, findings of a file.

A fixture line that must be flagged ends with ``# expect: MC201 error, MC203 error`` (target
caffe2, opset 9 unless a test says otherwise); every other line must not be.
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from pathlib import Path

from modelcheck.config import Config
from modelcheck.findings import Finding
from modelcheck.rules.base import Rule
from modelcheck.static.run import check_source
from modelcheck.targets import Target, make_target

FIXTURES = Path(__file__).parent / "fixtures" / "static"
_MARKER = re.compile(r"#\s*expect:\s*(MC\d{3}\s+\w+(?:\s*,\s*MC\d{3}\s+\w+)*)\s*$")


def target_of(spec: str) -> Target:
    """``caffe2``, ``onnx@9``, ... as a Target."""
    name, _, opset = spec.partition("@")
    return make_target(name, int(opset) if opset else None)


def expected(path: Path) -> Counter[tuple[int, str, str]]:
    """(line, code, severity) of every ``# expect:`` marker in a fixture."""
    marks: Counter[tuple[int, str, str]] = Counter()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = _MARKER.search(line)
        if match:
            for item in match.group(1).split(","):
                code, severity = item.split()
                marks[(number, code, severity)] += 1
    return marks


def findings(path: Path, target: str = "caffe2", config: Config | None = None) -> list[Finding]:
    return check_source(str(path), path.read_text(encoding="utf-8"), target_of(target), config or Config())


def findings_in(text: str, target: str = "caffe2") -> list[Finding]:
    """Findings for a snippet, as if it were a file."""
    return check_source("snippet.py", text, target_of(target), Config())


def found(path: Path, target: str = "caffe2", prefix: str = "MC") -> Counter[tuple[int, str, str]]:
    """(line, code, severity) of what the static pass reports, restricted to a code prefix."""
    return Counter(
        (f.location.line, f.code, f.severity.value) for f in findings(path, target) if f.code.startswith(prefix)
    )


def check_examples(rule: Rule) -> None:
    """The rule's bad example is flagged with its code at its example target; the good is not.

    A rule whose examples import sibling modules (``example_package``) has them checked as files
    of a package that holds those modules."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if rule.example_package:
            for name in ("__init__", *rule.example_package):
                (folder / f"{name}.py").write_text("")
        bad = check_source(str(folder / "bad_example.py"), rule.bad_example, target_of(rule.example_target), Config())
        good = check_source(str(folder / "good_example.py"), rule.good_example, target_of(rule.example_target),
                            Config())
    assert rule.code in {f.code for f in bad}, f"{rule.code}: bad_example not flagged: {bad}"
    assert rule.code not in {f.code for f in good}, f"{rule.code}: good_example flagged: {good}"
    assert not [f for f in bad + good if f.code == "MC000"], "examples must parse"


def make_package(folder: Path, *names: str) -> Path:
    """A package folder (``__init__.py``) holding the sibling modules ``names`` (each ``x = 1``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text("")
    for name in names:
        (folder / f"{name}.py").write_text("x = 1\n")
    return folder

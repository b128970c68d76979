"""The static pass: files in, findings out. Reads source only; never imports torch."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst
from modelcheck.config import Config
from modelcheck.findings import Finding, Location, Severity
from modelcheck.rules import FAMILIES, SYNTAX_ERROR
from modelcheck.rules.base import matches_for
from modelcheck.source import SourceFile
from modelcheck.targets import Target

_SKIP_DIRS = frozenset({".git", ".hg", ".svn", ".venv", "venv", "__pycache__", ".tox", ".nox",
                        ".mypy_cache", ".ruff_cache", ".pytest_cache", "node_modules", ".modelcheck",
                        "build", "dist", ".eggs"})
_NOQA = re.compile(
    r"#\s*(?:noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:[\s,]+[A-Z]+[0-9]+)*))?"
    r"|modelcheck:\s*ignore(?:\[(?P<mc_codes>[^\]]*)\])?)",
    re.IGNORECASE,
)


class PathError(OSError):
    """A path given on the command line that cannot be read."""


@dataclass
class StaticResult:
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files_checked: int = 0
    sources: dict[str, str] = field(default_factory=dict)  # path → text, for reports and fixes


def discover(paths: Iterable[Path], config: Config) -> tuple[list[Path], list[str]]:
    """The Python files under ``paths`` (folders recursively), minus excluded ones.

    A path named explicitly is checked even if it is excluded by a folder pattern, like ruff
    without --force-exclude; a missing path raises PathError.
    """
    files: list[Path] = []
    notes: list[str] = []
    for path in paths:
        if not path.exists():
            raise PathError(f"{path}: no such file or directory")
        if path.is_dir():
            found = sorted(_walk(path, config))
            if not found:
                notes.append(f"{path}: no Python files to check")
            files.extend(found)
        else:
            files.append(path)
    seen: set[Path] = set()
    unique = []
    for file in files:
        key = file.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(file)
    return unique, notes


def _walk(folder: Path, config: Config) -> Iterator[Path]:
    for child in folder.iterdir():
        if config.excluded(child):
            continue
        if child.is_dir():
            if child.name not in _SKIP_DIRS and not child.name.endswith(".egg-info"):
                yield from _walk(child, config)
        elif child.suffix in (".py", ".pyi") and child.is_file():
            yield child


def read_source(path: Path) -> tuple[str | None, str | None]:
    """(text, None) or (None, why it was skipped)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"{path}: skipped, cannot read ({exc.strerror or exc})"
    if b"\x00" in data:
        return None, f"{path}: skipped, binary file"
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        return None, f"{path}: skipped, not UTF-8 (byte {exc.start})"


def check_source(path: str, text: str, target: Target, config: Config) -> list[Finding]:
    """Findings for one file's text. A syntax error is itself a finding (MC000)."""
    families = [family for family in FAMILIES if family.TRIGGER.search(text)]
    if not families:
        error = _syntax_error_cheap(path, text)
        return [error] if error else []
    try:
        source = SourceFile.parse(path, text)
    except cst.ParserSyntaxError as exc:
        return [_syntax_finding(path, text, exc.raw_line, exc.raw_column + 1, exc.message)]
    except RecursionError:
        return [_syntax_finding(path, text, 1, 1, "too deeply nested to parse")]
    findings: list[Finding] = []
    for family in families:
        for node, facts in family.extract(source):
            hits = list(matches_for(family.RULES, facts, target))
            if not hits:
                continue
            location = source.location(node)
            for rule, match, severity in hits:
                findings.append(
                    Finding(
                        code=rule.code,
                        message=match.message,
                        severity=severity,
                        location=location,
                        fixable=match.fixable,
                        source_line=source.line_text(location.line),
                    )
                )
    return [f for f in findings if config.code_enabled(f.code, path) and not suppressed(f, source.lines)]


def _syntax_error_cheap(path: str, text: str) -> Finding | None:
    """Files no rule can match still get a syntax check, with the stdlib parser (fast)."""
    try:
        compile(text, path, "exec", dont_inherit=True, flags=0x400)  # ast.PyCF_ONLY_AST
    except SyntaxError as exc:
        return _syntax_finding(path, text, exc.lineno or 1, exc.offset or 1, exc.msg)
    except (ValueError, RecursionError, MemoryError) as exc:
        return _syntax_finding(path, text, 1, 1, str(exc))
    return None


def _syntax_finding(path: str, text: str, line: int, column: int, message: str) -> Finding:
    lines = text.splitlines()
    first_line = message.strip().splitlines()[0] if message.strip() else "invalid syntax"
    return Finding(
        code=SYNTAX_ERROR,
        message=f"syntax error: {first_line}; the file was not checked",
        severity=Severity.ERROR,
        location=Location(path, line, column),
        source_line=lines[line - 1] if 0 < line <= len(lines) else None,
    )


def suppressed(finding: Finding, lines: list[str]) -> bool:
    """``# noqa``, ``# noqa: MC201``, ``# modelcheck: ignore[MC201]`` on the finding's lines."""
    loc = finding.location
    candidates = {loc.line, loc.end_line or loc.line}
    for number in candidates:
        if not 0 < number <= len(lines):
            continue
        for match in _NOQA.finditer(lines[number - 1]):
            codes = match.group("codes") or match.group("mc_codes")
            if codes is None or not codes.strip():
                return True
            if any(finding.code.startswith(c) for c in re.split(r"[\s,]+", codes.strip()) if c):
                return True
    return False


def check_paths(paths: list[Path], target: Target, config: Config) -> StaticResult:
    """Run the static pass over files and folders; one bad file never stops the others."""
    result = StaticResult()
    files, notes = discover(paths, config)
    result.notes.extend(notes)
    for path in files:
        text, why = read_source(path)
        if text is None:
            result.notes.append(why or f"{path}: skipped")
            continue
        display = str(path)
        result.files_checked += 1
        result.sources[display] = text
        result.findings.extend(check_source(display, text, target, config))
    result.findings.sort(key=lambda f: (f.location.path, f.location.line, f.location.column, f.code))
    return result

"""``[tool.modelcheck]`` in pyproject.toml, merged with command-line options."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib
from modelcheck.findings import Severity


class ConfigError(ValueError):
    """A configuration value modelcheck cannot use; the message names the file."""


KNOWN_KEYS = {
    "target", "opset", "exporter", "select", "ignore", "exclude", "per-file-ignores",
    "fail-on", "models", "input-shape", "timeout", "atol", "rtol",
}


@dataclass
class Config:
    """Every setting one run needs; command-line values override the pyproject ones."""

    target: str = "caffe2"
    opset: int | None = None
    exporter: str | None = None
    select: list[str] = field(default_factory=lambda: ["MC"])
    ignore: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    per_file_ignores: dict[str, list[str]] = field(default_factory=dict)
    fail_on: Severity = Severity.ERROR
    models: list[dict[str, Any]] = field(default_factory=list)
    input_shape: tuple[int, ...] = (1, 3, 224, 224)
    timeout: float = 120.0
    atol: float = 1e-4
    rtol: float = 1e-3
    root: Path | None = None  # the folder holding the pyproject.toml used

    def code_enabled(self, code: str, path: str | None = None) -> bool:
        """Prefix selection, as in ruff: ``MC2`` selects MC2xx; the longest prefix wins."""
        best_select = max((len(p) for p in self.select if code.startswith(p)), default=-1)
        ignores = list(self.ignore)
        if path is not None:
            for pattern, codes in self.per_file_ignores.items():
                if _path_matches(path, pattern, self.root):
                    ignores.extend(codes)
        best_ignore = max((len(p) for p in ignores if code.startswith(p)), default=-1)
        return best_select >= 0 and best_select > best_ignore

    def excluded(self, path: Path) -> bool:
        return any(_path_matches(str(path), pattern, self.root) for pattern in self.exclude)


def _path_matches(path: str, pattern: str, root: Path | None) -> bool:
    candidates = {path, Path(path).as_posix(), Path(path).name}
    if root is not None:
        try:
            candidates.add(Path(path).resolve().relative_to(root.resolve()).as_posix())
        except ValueError:
            pass
    for candidate in candidates:
        if fnmatch.fnmatch(candidate, pattern) or fnmatch.fnmatch(candidate, pattern.rstrip("/") + "/*"):
            return True
        if any(part == pattern.strip("/") for part in Path(candidate).parts):
            return True
    return False


def find_pyproject(paths: list[Path]) -> Path | None:
    """The nearest pyproject.toml with a [tool.modelcheck] table, walking up from the paths."""
    starts = [p.resolve() for p in paths] or [Path.cwd()]
    for start in starts:
        folder = start if start.is_dir() else start.parent
        for candidate in (folder, *folder.parents):
            pyproject = candidate / "pyproject.toml"
            if pyproject.is_file() and _has_table(pyproject):
                return pyproject
    return None


def _has_table(pyproject: Path) -> bool:
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
    return "modelcheck" in data.get("tool", {})


def load_config(pyproject: Path | None) -> Config:
    """Read ``[tool.modelcheck]``; raise ConfigError with the file name on a bad value."""
    config = Config()
    if pyproject is None:
        return config
    try:
        table = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get("modelcheck", {})
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{pyproject}: cannot read [tool.modelcheck]: {exc}") from exc
    unknown = set(table) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{pyproject}: unknown [tool.modelcheck] key(s): {', '.join(sorted(unknown))}")
    config.root = pyproject.parent
    try:
        if "target" in table:
            config.target = str(table["target"])
        if "opset" in table:
            config.opset = int(table["opset"])
        if "exporter" in table:
            config.exporter = str(table["exporter"])
        for key in ("select", "ignore", "exclude"):
            if key in table:
                setattr(config, key, _str_list(table[key], key))
        if "per-file-ignores" in table:
            config.per_file_ignores = {
                str(k): _str_list(v, f"per-file-ignores.{k}") for k, v in table["per-file-ignores"].items()
            }
        if "fail-on" in table:
            config.fail_on = Severity(table["fail-on"])
        if "input-shape" in table:
            config.input_shape = parse_shape(table["input-shape"])
        for key in ("timeout", "atol", "rtol"):
            if key in table:
                setattr(config, key, float(table[key]))
        if "models" in table:
            config.models = _models(table["models"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{pyproject}: [tool.modelcheck]: {exc}") from exc
    return config


def _str_list(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a list of strings")
    return list(value)


def _models(value: Any) -> list[dict[str, Any]]:
    """``models`` is a table of spec → options, or a list of specs/tables with a ``spec`` key."""
    if isinstance(value, dict):
        return [{"spec": spec, **(opts if isinstance(opts, dict) else {})} for spec, opts in value.items()]
    if isinstance(value, list):
        return [v if isinstance(v, dict) else {"spec": str(v)} for v in value]
    raise ValueError("models must be a table or a list")


def parse_shape(value: Any) -> tuple[int, ...]:
    """``"1,3,224,224"`` or ``[1, 3, 224, 224]`` → a shape tuple of positive ints."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        shape = tuple(int(str(p).strip()) for p in parts)
    except ValueError:
        raise ValueError(f"input shape {value!r} is not a comma-separated list of integers") from None
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(f"input shape {value!r} must have positive dimensions")
    return shape

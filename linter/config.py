"""``[tool.modelcheck]`` in pyproject.toml, merged with command-line options."""

from __future__ import annotations

import contextlib
import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib
from modelcheck.findings import Severity
from modelcheck.smoke.stages import ATOL, RTOL
from modelcheck.targets import EXPORTERS, TARGET_NAMES

FAIL_ON = (*(severity.value for severity in Severity), "never")


class ConfigError(ValueError):
    """A configuration value modelcheck cannot use; the message names the file."""


KNOWN_KEYS = {
    "target", "opset", "exporter", "select", "ignore", "exclude", "per-file-ignores",
    "fail-on", "models", "input-shape", "inputs", "timeout", "atol", "rtol", "force-exclude",
}


@dataclass
class Config:
    """Every setting one run needs; command-line values override the pyproject ones."""

    target: str = "caffe2"  # one target name, or several joined by commas ("caffe2,executorch")
    opset: int | None = None
    exporter: str | None = None
    select: list[str] = field(default_factory=lambda: ["MC"])
    ignore: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    #: exclusions apply to paths named on the command line too (``--force-exclude``, as in ruff)
    force_exclude: bool = False
    per_file_ignores: dict[str, list[str]] = field(default_factory=dict)
    fail_on: str = "error"  # a Severity value, or "never"
    models: list[dict[str, Any]] = field(default_factory=list)
    #: the first input's shape; ``input_shapes`` has every input's (``--input-shape "A;B"``)
    input_shape: tuple[int, ...] = (1, 3, 224, 224)
    input_shapes: tuple[tuple[int, ...], ...] = ()  # empty: just ``input_shape``
    #: ``module:make_inputs`` or ``path/file.py:make_inputs``: a callable giving the example inputs
    inputs: str | None = None
    timeout: float = 120.0
    #: outputs match when max|diff| <= atol + rtol * max|PyTorch value| (per output; calibrated defaults)
    atol: float = ATOL
    rtol: float = RTOL
    root: Path | None = None  # the folder holding the pyproject.toml used

    def __post_init__(self) -> None:
        self.set_input_shapes(self.input_shapes or (self.input_shape,))

    def set_input_shapes(self, shapes: tuple[tuple[int, ...], ...]) -> None:
        """Set every input's shape (``input_shape`` follows as the first)."""
        self.input_shapes = tuple(tuple(shape) for shape in shapes)
        self.input_shape = self.input_shapes[0]

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
        with contextlib.suppress(ValueError):  # a path outside the project
            candidates.add(Path(path).resolve().relative_to(root.resolve()).as_posix())
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
    """Does this pyproject configure modelcheck? A broken one that mentions it is an error."""
    try:
        text = pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        if "[tool.modelcheck" in text:
            raise ConfigError(f"{pyproject}: not valid TOML: {exc}") from None
        return False
    tool = data.get("tool", {})
    return isinstance(tool, dict) and "modelcheck" in tool


def load_config(pyproject: Path | None) -> Config:
    """Read ``[tool.modelcheck]``; raise ConfigError with the file name on a bad value."""
    config = Config()
    if pyproject is None:
        return config
    table = _read_table(pyproject)
    config.root = pyproject.parent
    try:
        _apply_target_keys(config, table)
        _apply_rule_keys(config, table)
        _apply_run_keys(config, table)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{pyproject}: [tool.modelcheck]: {exc}") from None
    return config


def _read_table(pyproject: Path) -> dict[str, Any]:
    """The ``[tool.modelcheck]`` table; unreadable TOML, a non-table or an unknown key is an error."""
    try:
        table = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get("modelcheck", {})
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{pyproject}: cannot read [tool.modelcheck]: {exc}") from exc
    if not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: [tool.modelcheck] must be a table")
    unknown = set(table) - KNOWN_KEYS
    if unknown:
        raise ConfigError(f"{pyproject}: unknown [tool.modelcheck] key(s): {', '.join(sorted(unknown))}")
    return table


def _apply_target_keys(config: Config, table: dict[str, Any]) -> None:
    """``target`` (one name or a list), ``opset``, ``exporter``: where the model goes."""
    if "target" in table:
        names = table["target"] if isinstance(table["target"], list) else [table["target"]]
        config.target = ",".join(_choice(name, "target", TARGET_NAMES) for name in names)
    if "opset" in table:
        config.opset = _int(table["opset"], "opset")
    if "exporter" in table:
        config.exporter = _choice(table["exporter"], "exporter", EXPORTERS)


def _apply_rule_keys(config: Config, table: dict[str, Any]) -> None:
    """``select``, ``ignore``, ``exclude``, ``force-exclude``, ``per-file-ignores``, ``fail-on``:
    which files and findings count."""
    for key in ("select", "ignore"):
        if key in table:
            setattr(config, key, codes(_str_list(table[key], key), key))
    if "exclude" in table:
        config.exclude = _str_list(table["exclude"], "exclude")
    if "force-exclude" in table:
        if not isinstance(table["force-exclude"], bool):
            raise ValueError(f"force-exclude must be true or false, not {table['force-exclude']!r}")
        config.force_exclude = table["force-exclude"]
    if "per-file-ignores" in table:
        config.per_file_ignores = _per_file_ignores(table["per-file-ignores"])
    if "fail-on" in table:
        config.fail_on = _choice(table["fail-on"], "fail-on", FAIL_ON)


def _per_file_ignores(value: Any) -> dict[str, list[str]]:
    """``per-file-ignores``: a table of pattern = [codes], each list checked as ``ignore`` is."""
    if not isinstance(value, dict):
        raise ValueError("per-file-ignores must be a table of pattern = [codes]")
    return {str(k): codes(_str_list(v, f"per-file-ignores.{k}"), f"per-file-ignores.{k}") for k, v in value.items()}


def _apply_run_keys(config: Config, table: dict[str, Any]) -> None:
    """``input-shape``, ``inputs``, ``timeout``, ``atol``, ``rtol``, ``models``: what tracing and
    the smoke test run, and how strictly."""
    if "input-shape" in table:
        config.set_input_shapes(parse_shapes(table["input-shape"]))
    if "inputs" in table:
        config.inputs = parse_inputs_ref(table["inputs"], "inputs", base=config.root)
    for key in ("timeout", "atol", "rtol"):
        if key in table:
            setattr(config, key, _number(table[key], key, positive=key == "timeout"))
    if "models" in table:
        config.models = _models(table["models"])


#: rule codes and prefixes: "MC", "MC2", "MC201"
_CODE = re.compile(r"MC\d{0,3}")


def codes(values: list[str], key: str) -> list[str]:
    """Upper-cased codes or prefixes; anything that cannot select a rule is an error."""
    result = [value.strip().upper() for value in values]
    bad = [value for value in result if not _CODE.fullmatch(value)]
    if bad:
        raise ValueError(f"{key}: {', '.join(map(repr, bad))} is not a rule code or prefix (like MC2 or MC201)")
    from modelcheck.rules import PSEUDO_CODES, RULES_BY_CODE

    known = [*RULES_BY_CODE, *PSEUDO_CODES]
    unknown = [value for value in result if not any(code.startswith(value) for code in known)]
    if unknown:  # a typo would otherwise select (or ignore) nothing, silently
        raise ValueError(f"{key}: {', '.join(map(repr, unknown))} matches no rule (see modelcheck --list-rules)")
    return result


def _choice(value: Any, key: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, not {value!r}")
    return value


def _number(value: Any, key: str, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (positive and value == 0):
        raise ValueError(f"{key} must be a {'positive' if positive else 'non-negative'} number, not {value!r}")
    return float(value)


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
    """``"1,3,224,224"`` or ``[1, 3, 224, 224]`` → a shape tuple of positive ints (one input)."""
    if isinstance(value, str):
        parts: list[Any] = value.split(",")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise ValueError(f"input shape {value!r} is not a comma-separated list of integers")
    try:
        if any(isinstance(p, (bool, float, list, tuple, dict)) for p in parts):
            raise ValueError
        shape = tuple(int(str(p).strip()) for p in parts)
    except ValueError:
        raise ValueError(f"input shape {value!r} is not a comma-separated list of integers") from None
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(f"input shape {value!r} must have positive dimensions")
    return shape


def parse_shapes(value: Any) -> tuple[tuple[int, ...], ...]:
    """Every input's shape: ``"1,3,224,224;1,1,224,224"`` (``;`` between inputs), one shape
    (``"1,3,224,224"``, ``[1, 3, 224, 224]``) or a list of them (``[[1, 3, 224, 224], "1,1,224,224"]``).

    A bad value is a one-line ValueError naming the whole value and the input it failed on.
    """
    if isinstance(value, str):
        items: list[Any] = value.split(";")
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple, str)) for v in value):
        items = list(value)
    elif isinstance(value, (list, tuple)) and any(isinstance(v, (list, tuple, str)) for v in value):
        raise ValueError(f"input shape {value!r} mixes numbers and shapes: give one shape or a list of shapes")
    else:
        items = [value]
    shapes = []
    for index, item in enumerate(items):
        if isinstance(item, str) and not item.strip():
            raise ValueError(f"input shape {value!r}: input {index + 1} is empty (shapes are separated by ';')")
        try:
            shapes.append(parse_shape(item))
        except ValueError as exc:
            if len(items) == 1 and (isinstance(value, str) or item is value):
                raise
            raise ValueError(f"input shape {value!r}: input {index + 1}: {exc}") from None
    return tuple(shapes)


def parse_inputs_ref(value: Any, key: str = "--inputs", base: Path | None = None) -> str:
    """``module:make_inputs`` or ``path/file.py:make_inputs``, syntax checked (nothing imported);
    a relative file path is joined with ``base`` (the pyproject's folder for its ``inputs``)."""
    text = value.strip() if isinstance(value, str) else ""
    where, sep, name = text.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ValueError(f"{key} {value!r} must look like package.module:make_inputs or path/file.py:make_inputs")
    if base is not None and (where.endswith(".py") or "/" in where or "\\" in where) and not Path(where).is_absolute():
        return f"{base / where}:{name}"
    return text

"""The static pass on hard inputs: symlink cycles, --force-exclude, positions computed in one
pass, and big modules parsed in pieces, each checked against the plain behaviour.

Speed and memory are measured by benchmarks/bench_hard_inputs.py, never asserted here.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import libcst as cst
import pytest
from modelcheck.cli.main import app
from modelcheck.config import Config, ConfigError, load_config
from modelcheck.rules import FAMILIES
from modelcheck.static import run as static
from modelcheck.static.run import check_paths, check_source, discover
from modelcheck.static.source import SourceFile
from static_helpers import target_of
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
BAD = "import torch.nn as nn\nup = nn.Upsample(scale_factor=2, mode='bilinear')\n"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_hard_inputs", ROOT / "benchmarks" / "bench_hard_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _bench()


# ----- symbolic links ----------------------------------------------------------------------

def _symlinks_supported(tmp_path: Path) -> bool:
    try:
        (tmp_path / ".probe").symlink_to(tmp_path)
    except (OSError, NotImplementedError):
        return False
    (tmp_path / ".probe").unlink()
    return True


@pytest.fixture
def linked_tree(tmp_path: Path) -> Path:
    if not _symlinks_supported(tmp_path):
        pytest.skip("no symlinks here")
    root = tmp_path / "proj"
    for name in ("m.py", "pkg/deep/n.py", "other/o.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(BAD)
    (root / "a_self").symlink_to(".")  # a cycle beside the file
    (root / "pkg" / "up").symlink_to("..")  # a cycle through the parent
    (root / "pkg" / "deep" / "loop").symlink_to("../..")
    (root / "pkg" / "other_link").symlink_to("../other")  # a second way to a folder
    (root / "m_link.py").symlink_to("m.py")  # a second way to a file
    (root / "dangling.py").symlink_to("nowhere.py")
    return root


def test_symlink_cycles_check_each_real_file_once_under_its_shortest_path(linked_tree: Path) -> None:
    result = check_paths([linked_tree], target_of("caffe2"), Config())
    checked = sorted(Path(path).relative_to(linked_tree).as_posix() for path in result.sources)
    assert checked == ["m.py", "other/o.py", "pkg/deep/n.py"]
    assert result.files_checked == 3
    assert sorted(Path(f.location.path).relative_to(linked_tree).as_posix() for f in result.findings) == checked


def test_a_folder_reached_only_through_a_symlink_is_checked(tmp_path: Path) -> None:
    if not _symlinks_supported(tmp_path):
        pytest.skip("no symlinks here")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "s.py").write_text(BAD)
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "models").symlink_to(tmp_path / "shared")
    files, _ = discover([tmp_path / "proj"], Config())
    assert files == [tmp_path / "proj" / "models" / "s.py"]


def test_a_symlinked_file_named_explicitly_is_checked_once_as_named(linked_tree: Path) -> None:
    link = linked_tree / "m_link.py"
    files, _ = discover([link, linked_tree, link], Config())
    assert [f for f in files if f.resolve() == (linked_tree / "m.py").resolve()] == [link]
    assert len(files) == 3
    result = invoke(str(link), "--format", "json")
    assert [f["path"] for f in json.loads(result.stdout)["findings"]] == [str(link)]


# ----- --force-exclude -----------------------------------------------------------------------

def invoke(*args: str, cwd: Path | None = None):
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(app, ["--static-only", *args])
    finally:
        os.chdir(old)


def _excluding_project(tmp_path: Path, table: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(f"[tool.modelcheck]\nexclude = [\"legacy\", \"gen_*.py\"]\n{table}\n")
    for name in ("model.py", "legacy/old.py", "gen_net.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(BAD)
    return tmp_path


def _paths(result) -> list[str]:
    assert result.exit_code in (0, 1), result.output
    return sorted({Path(f["path"]).as_posix() for f in json.loads(result.stdout)["findings"]})


def test_exclude_spares_named_files_unless_force_exclude(tmp_path: Path) -> None:
    root = _excluding_project(tmp_path, "")
    named = ("model.py", "legacy/old.py", "gen_net.py")
    assert _paths(invoke(*named, "--format", "json", cwd=root)) == sorted(named)
    assert _paths(invoke(*named, "--format", "json", "--force-exclude", cwd=root)) == ["model.py"]
    assert _paths(invoke(".", "--format", "json", cwd=root)) == ["model.py"]  # a folder: always excluded
    # an excluded folder named explicitly is skipped whole
    result = invoke("legacy", "--format", "json", "--force-exclude", cwd=root)
    assert result.exit_code == 0 and json.loads(result.stdout)["findings"] == []


def test_force_exclude_in_pyproject(tmp_path: Path) -> None:
    root = _excluding_project(tmp_path, "force-exclude = true")
    assert load_config(root / "pyproject.toml").force_exclude is True
    assert _paths(invoke("model.py", "legacy/old.py", "gen_net.py", "--format", "json", cwd=root)) == ["model.py"]
    result = invoke("gen_net.py", cwd=root)  # everything named is excluded: nothing to check, success
    assert result.exit_code == 0, result.output


def test_force_exclude_must_be_a_boolean(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.modelcheck]\nforce-exclude = "yes"\n')
    with pytest.raises(ConfigError, match="force-exclude must be true or false"):
        load_config(tmp_path / "pyproject.toml")


def test_the_pre_commit_hooks_pass_force_exclude() -> None:
    hooks = (ROOT / ".pre-commit-hooks.yaml").read_text()
    entries = [line.split("entry:", 1)[1].split() for line in hooks.splitlines() if line.strip().startswith("entry:")]
    assert len(entries) == 2 and all("--force-exclude" in entry for entry in entries)


# ----- positions: one pass, the same ranges as libcst's PositionProvider --------------------

POSITION_FILES = sorted((FIXTURES / "static").glob("*.py")) + sorted((FIXTURES / "dynamic").glob("*.py"))


def _every_node(module: cst.Module) -> list[cst.CSTNode]:
    nodes: list[cst.CSTNode] = []

    class _All(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            if node is not module:
                nodes.append(node)
            return True

    module.visit(_All())
    return nodes


def _texts() -> list[tuple[str, str]]:
    texts = [(path.name, path.read_text(encoding="utf-8")) for path in POSITION_FILES]
    return [*texts, ("resnext_101_32x4d_lua.py", BENCH.lua_resnext())]


@pytest.mark.parametrize(("name", "text"), _texts(), ids=[name for name, _ in _texts()])
def test_positions_in_one_pass_equal_the_per_statement_positions(name: str, text: str) -> None:
    """Every node's range (whitespace and punctuation nodes too), batch vs the old lazy
    PositionProvider code generation, and vs libcst's MetadataWrapper."""
    module = cst.parse_module(text)
    nodes = _every_node(module)
    batch, old = SourceFile(name, text, module), SourceFile(name, text, module)
    batch.locate(nodes)
    assert len(batch._located) == len(nodes)
    assert [batch._located[node] for node in nodes] == [old._position(node) for node in nodes]
    wrapper = cst.MetadataWrapper(module, unsafe_skip_copy=True).resolve(cst.metadata.PositionProvider)
    assert [batch._located[node] for node in nodes] == [wrapper[node] for node in nodes]


@pytest.mark.parametrize(("name", "text"), _texts(), ids=[name for name, _ in _texts()])
def test_finding_locations_equal_the_old_per_finding_ones(name: str, text: str) -> None:
    """check_source's findings (positions computed at once) equal findings located one by one."""
    for target in ("caffe2", "caffe2@11", "onnx"):
        new = check_source(name, text, target_of(target), Config())
        families, code, line_map = static.reduce_source(text, FAMILIES)
        if not families:
            assert new == []
            continue
        source = SourceFile.parse(name, text, code, line_map)
        old = []
        for family in families:
            for node, facts in family.extract(source):
                for rule, match, _ in static.matches_for(family.rules, facts, target_of(target)):
                    loc = source.location(node)  # the lazy per-node path
                    old.append((rule.code, loc.line, loc.column, loc.end_line, loc.end_column, match.message))
        config = Config()
        old = [o for o in old if config.code_enabled(o[0], name)]
        assert [(f.code, f.location.line, f.location.column, f.location.end_line, f.location.end_column, f.message)
                for f in new] == [o for o in old if not _suppressed(o, text)]


def _suppressed(row: tuple, text: str) -> bool:
    from modelcheck.findings import Finding, Location, Severity

    finding = Finding(code=row[0], message=row[5], severity=Severity.ERROR,
                      location=Location("x", row[1], row[2], row[3], row[4]))
    return static.suppressed(finding, SourceFile("x", text, cst.parse_module("")).lines)


# ----- big modules parsed in pieces: the same tree ------------------------------------------

LAYOUTS = [
    "# header comment\n\nimport torch.nn as nn\n@decorator(\n    1)\nclass M(nn.Module):\n    x = [\n1]\n"
    "    # comment at body level\n\n    def __init__(self): self.f = lambda x: x\n    def g(self, a, \\\nb):\n"
    "        if a:\n            pass\n            # deeper comment\n\n        # same-level comment\n"
    "        self.f = lambda x: x\n        \n        return 1\n    async def h(self):\n        class Inner:\n"
    "            def k(self):\n                return 2\n            # c\n            def j(self):\n"
    "                '''doc\ndef fake():\n    pass\n'''\n                return 3\n\n        return Inner\n"
    "    @property\n    def p(self):  # trailing\n        return 4\n# column-0 comment\n    def q(self):\n"
    "        return 5\n\n\n\ndef last():\n\treturn 6\n\t# tabbed\ndef very_last():\n\tx = 1 ; y = 2\n\treturn x\n"
    "# final comment\n",
    "import torch.nn as nn\r\nclass M(nn.Module):\r\n\tdef __init__(self):\r\n\t\tself.f = lambda x: x\r\n\r\n"
    "\tdef g(self):\r\n\t\treturn 1\r\n\tdef h(self):\r\n\t\treturn 2\r\n",
    "x = 1\nif x:\n\ty = 2\nclass A:\n    def f(self):\n        return 1\n    def g(self):\n        return 2\n",
    "def f():\n    return 1\n\n\n\n# c\ndef g():\n    return 2\n",
]


def _piece_cases() -> list[tuple[str, str]]:
    files = sorted(FIXTURES.rglob("*.py"))
    cases = [(str(path.relative_to(FIXTURES)), path.read_text(encoding="utf-8")) for path in files]
    cases += [(f"layout{index}", text) for index, text in enumerate(LAYOUTS)]
    cases.append(("lua", BENCH.lua_resnext()))
    cases.append(("huge-small", BENCH.huge_module(calls=300, functions=3)))
    return cases


def test_pieces_put_together_are_the_tree_of_a_whole_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut everywhere a cut is allowed: every fixture's tree equals libcst's whole-file tree."""
    monkeypatch.setattr(static, "CHUNK_LINES", 1)
    monkeypatch.setattr(static, "PIECE_LINES", 1)
    joined = 0
    pieces = static._parse_pieces

    def counting(*args):
        nonlocal joined
        module = pieces(*args)
        joined += 1
        return module

    monkeypatch.setattr(static, "_parse_pieces", counting)
    checked = 0
    for name, text in _piece_cases():
        try:
            whole = cst.parse_module(text)
        except cst.ParserSyntaxError:
            continue
        checked += 1
        joined_tree = static.parse_module(text)
        assert joined_tree.deep_equals(whole), name
        assert joined_tree.code == text, name
    assert checked > 40 and joined > 40  # the pieces path was taken, not the whole-file fallback


def test_findings_of_a_module_parsed_in_pieces_equal_those_of_a_whole_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [text for _, text in _piece_cases()[-3:]]
    texts += [path.read_text() for path in sorted((FIXTURES / "static").glob("*.py"))]
    expected = [check_source("m.py", text, target_of("caffe2"), Config()) for text in texts]
    monkeypatch.setattr(static, "CHUNK_LINES", 1)
    monkeypatch.setattr(static, "PIECE_LINES", 3)
    assert [check_source("m.py", text, target_of("caffe2"), Config()) for text in texts] == expected
    assert len(expected[-len(texts) + 2]) == 300  # the generated module: every call found

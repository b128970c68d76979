"""The static pass: suppression comments, bad input, and the pre-screen that keeps it fast.

The pre-screen parses only the statements a rule can care about; it must never change what is
found, which the equivalence tests check against a full libcst parse of the same files.
"""

from __future__ import annotations

import os

import libcst as cst
import pytest
from modelcheck.config import Config
from modelcheck.rules import FAMILIES
from modelcheck.rules.base import matches_for
from modelcheck.static import run as static
from modelcheck.static.run import check_paths, check_source, reduce_source
from modelcheck.static.source import _TRIVIA, SourceFile, walk
from static_helpers import FIXTURES, expected, findings_in, found, target_of

BAD = "import torch.nn as nn\nup = nn.Upsample(scale_factor=2, mode='bilinear'){comment}\n"


@pytest.mark.parametrize(
    ("comment", "suppressed"),
    [
        ("", False),
        ("  # noqa", True),
        ("  # noqa: MC201", True),
        ("  # noqa:MC201", True),
        ("  # noqa: E501, MC201", True),
        ("  # noqa: MC2", True),
        ("  # noqa: MC301", False),
        ("  # noqa: E501", False),
        ("  # modelcheck: ignore[MC201]", True),
        ("  # modelcheck: ignore[MC301, MC201]", True),
        ("  # modelcheck: ignore", True),
        ("  # modelcheck: ignore[MC202]", False),
    ],
)
def test_suppression_comments_on_the_flagged_line(comment, suppressed):
    codes = [f.code for f in findings_in(BAD.format(comment=comment))]
    assert codes == ([] if suppressed else ["MC201"])


def test_noqa_on_the_last_line_of_a_multi_line_call():
    text = "import torch.nn as nn\nup = nn.Upsample(\n    scale_factor=2, mode='bilinear',\n)  # noqa: MC201\n"
    assert findings_in(text) == []


def test_lines_after_a_form_feed_keep_their_numbers():
    """Python counts only newlines; str.splitlines would also split at the form feed."""
    text = "import torch.nn as nn\n\x0c\nup = nn.Upsample(scale_factor=2, mode='bilinear'){}\n"
    [finding] = findings_in(text.format(""))
    assert (finding.location.line, finding.source_line) == (3, "up = nn.Upsample(scale_factor=2, mode='bilinear')")
    assert findings_in(text.format("  # noqa: MC201")) == []


def test_noqa_elsewhere_does_not_suppress():
    text = "import torch.nn as nn  # noqa\nup = nn.Upsample(scale_factor=2, mode='bilinear')\n"
    assert [f.code for f in findings_in(text)] == ["MC201"]


def test_syntax_error_is_a_finding_with_its_line():
    text = "import torch.nn as nn\n\ndef broken(:\n    pass\n"
    [finding] = findings_in(text)
    assert finding.code == "MC000"
    assert finding.location.line == 3
    assert finding.severity.value == "error"
    assert "syntax error" in finding.message


def test_syntax_error_far_from_any_trigger_is_still_found():
    """The pre-screen skips parsing untriggered code with libcst: the compiler still sees it all."""
    text = "import torch.nn as nn\nup = nn.Upsample(scale_factor=2, mode='bilinear')\n" + "x = 1\n" * 50 + "y = (\n"
    [finding] = findings_in(text)
    assert finding.code == "MC000"


def test_user_code_is_compiled_not_run_and_its_warnings_stay_quiet(capfd):
    text = "import os\nos.system('echo RAN')\nx = '\\d'\nassert (x, 'message')\n"
    assert findings_in(text) == []
    out, err = capfd.readouterr()
    assert "RAN" not in out and err == ""


def test_one_bad_file_does_not_stop_the_others(tmp_path):
    (tmp_path / "broken.py").write_text("def f(:\n")
    (tmp_path / "model.py").write_text(BAD.format(comment=""))
    (tmp_path / "latin1.py").write_bytes("# caf\xe9\nx = 1\n".encode("latin-1"))
    (tmp_path / "blob.py").write_bytes(b"\x00\x01\x02binary")
    result = check_paths([tmp_path], target_of("caffe2"), Config())
    assert sorted((f.location.path.rsplit("/", 1)[-1], f.code) for f in result.findings) == [
        ("broken.py", "MC000"), ("model.py", "MC201")]
    assert result.files_checked == 2
    assert any("latin1.py: skipped, not UTF-8" in note for note in result.notes)
    assert any("blob.py: skipped, binary file" in note for note in result.notes)


def test_a_coding_cookie_is_honoured(tmp_path):
    """PEP 263: a Latin-1 file that says so is Python, and is checked."""
    (tmp_path / "declared.py").write_bytes(("# -*- coding: latin-1 -*-\n# caf\xe9\n" + BAD.format(comment=""))
                                           .encode("latin-1"))
    result = check_paths([tmp_path], target_of("caffe2"), Config())
    assert [(f.code, f.location.line) for f in result.findings] == [("MC201", 4)]
    assert result.notes == []


def test_discovery_recurses_skips_virtualenvs_and_honours_exclude(tmp_path):
    for name in ("a.py", "pkg/b.py", "pkg/deep/c.pyi", ".venv/lib/d.py", "build/e.py", "legacy/f.py", "notes.txt"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(BAD.format(comment=""))
    result = check_paths([tmp_path], target_of("caffe2"), Config(exclude=["legacy"]))
    checked = sorted(p.rsplit("/", 1)[-1] for p in result.sources)
    assert checked == ["a.py", "b.py", "c.pyi"]


def test_star_and_unaliased_imports_name_torch_apis():
    path = FIXTURES / "imports_star.py"
    assert found(path) == expected(path)


# ----- the pre-screen --------------------------------------------------------------------

def _full_parse_findings(path: str, text: str, target: str = "caffe2") -> set[tuple]:
    """What the rules find on a full libcst parse of the whole file: the reference."""
    source = SourceFile.parse(path, text)
    out = set()
    for family in FAMILIES:
        for node, facts in family.extract(source):
            for rule, match, severity in matches_for(family.rules, facts, target_of(target)):
                loc = source.location(node)
                out.add((rule.code, loc.line, loc.column, loc.end_line, loc.end_column, severity.value,
                         match.message))
    return out


def _static_findings(path: str, text: str, target: str = "caffe2") -> set[tuple]:
    return {
        (f.code, f.location.line, f.location.column, f.location.end_line, f.location.end_column,
         f.severity.value, f.message)
        for f in check_source(path, text, target_of(target), Config())
    }


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("*.py")), ids=lambda p: p.name)
@pytest.mark.parametrize("target", ["caffe2", "caffe2@11"])
def test_pre_screen_finds_what_a_full_parse_finds(fixture, target):
    text = fixture.read_text()
    assert _static_findings(str(fixture), text, target) == _full_parse_findings(str(fixture), text, target)


def test_pre_screen_keeps_little_of_a_file_with_one_hot_spot():
    body = "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(200))
    text = "import torch.nn as nn\n\n\n" + body + "class M(nn.Module):\n    def __init__(self):\n" \
        "        super().__init__()\n        self.f = lambda x: x\n\n    def forward(self, x):\n        return x\n"
    families, code, line_map = reduce_source(text, FAMILIES)
    assert [family.name for family in families] == ["pickling"]
    assert len(code.splitlines()) < 10
    assert [text.splitlines()[n - 1] for n in line_map] == code.splitlines()
    [finding] = check_source("m.py", text, target_of("caffe2"), Config())
    assert finding.location.line == text.splitlines().index("        self.f = lambda x: x") + 1


@pytest.mark.parametrize(
    ("text", "count"),
    [
        # code-looking lines inside a string, at column 0, must not become statements
        ('DOC = """\nclass Fake(nn.Module):\n    def __init__(self):\n        self.f = lambda x: x\n"""\n', 0),
        # decorators, continuation lines, brackets closing at column 0, one-line bodies
        ("import torch.nn as nn\n@decorator(\n    1)\nclass M(nn.Module):\n    x = [\n1]\n"
         "    def __init__(self): self.f = lambda x: x\n", 1),
        ("import torch.nn as nn\nclass M(nn.Module):\n    def __init__(self, a, \\\nb):\n"
         "        self.f = lambda x: x\n", 1),
        # clauses of a compound statement stay with it; a class with only docstrings kept as a stub
        ("import torch.nn as nn\ntry:\n    import torch.nn.functional as F\nexcept ImportError:\n    F = None\n"
         "class Base(nn.Module):\n    '''doc'''\nclass M(Base):\n    def __init__(self):\n"
         "        if True:\n            pass\n        else:\n            self.f = lambda x: x\n", 1),
        # a nested def stored through a local alias
        ("import torch.nn as nn\nclass M(nn.Module):\n    def __init__(self):\n        def g(x):\n"
         "            return x\n        h = g\n        self.h = h\n        self.g = g\n", 1),
        # tabs for indentation, CRLF line ends
        ("import torch.nn as nn\r\nclass M(nn.Module):\r\n\tdef __init__(self):\r\n\t\tself.f = lambda x: x\r\n", 1),
        # found by fuzzing: a lone CR ends a line for Python and libcst (the pre-screen crashed)
        ("import torch.nn as nn\r\r\nclass M(nn.Module):\r    def __init__(self):\r\n        self.f = lambda x: x\r"
         "        self.g = lambda x: x\r\n", 2),
        # a module-level alias of an API (FileFacts.api_of reads constants), called in a function
        ("import torch.nn.functional as F\nUP = F.interpolate\n\n\ndef f(x):\n"
         "    return UP(x, scale_factor=2, mode='bilinear')\n", 1),
        # a call in an f-string's field is code: the pre-screen masked it as a string and missed it
        ("import torch.nn.functional as F\n\n\ndef f(x):\n"
         "    return f'{F.interpolate(x, scale_factor=2, mode=\"bilinear\")}'\n", 1),
    ],
    ids=["string", "decorators-brackets", "backslash", "clauses-stub", "alias", "tabs-crlf", "lone-cr",
         "constant-alias", "f-string"],
)
def test_pre_screen_layouts(text, count):
    found = _static_findings("t.py", text)
    assert len(found) == count
    assert found == _full_parse_findings("t.py", text)


_OPS = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\nfrom functools import partial\n"
_INIT = _OPS + "class M(nn.Module):\n    def __init__(self{params}):\n        {body}\n"


@pytest.mark.parametrize(
    ("text", "count"),
    [
        # every way FileFacts.api_call names an API: passed to partial, through an alias or an import's name
        (_INIT.format(params="", body="self.b = Block(norm_layer=partial(nn.LayerNorm, eps=1e-6))"), 1),
        (_OPS + "NORM = nn.LayerNorm\n\n\nclass M(nn.Module):\n    def __init__(self):\n        self.n = NORM(8)\n", 1),
        (_OPS + "A = B = nn.LayerNorm\n\n\nclass M(nn.Module):\n    def __init__(self):\n        self.n = B(8)\n", 1),
        (_INIT.format(params=", norm=None", body="norm = norm or nn.LayerNorm\n        self.n = norm(8)"), 1),
        (_OPS + "def f(x):\n    p: object = torch.pow\n    return p(x, 2)\n", 1),
        ("from torch import pow as power\n\n\ndef f(x):\n    return power(x, 2)\n", 1),
        # an API decided by its arguments, with a failing one however it is given
        (_INIT.format(params="", body="c = nn.Conv2d\n        self.c = c(1, 2, 3, padding='same')"), 1),
        (_INIT.format(params="", body="self.c = partial(\n            nn.Conv2d,\n            padding='same')"), 1),
        (_INIT.format(params="", body="self.c = nn.Conv2d(3, 8, 3, 1, r'same')"), 1),
        (_INIT.format(params=", c, r", body="self.c = nn.Conv2d(int(c * (1 + r)), 8, 3, padding='same')"), 1),
        (_OPS + "PAD = 'same'\n\n\nclass M(nn.Module):\n    def __init__(self):\n"
         "        self.c = nn.Conv2d(3, 8, 3, padding=PAD)\n", 1),
        (_OPS + "class M(nn.Module):\n    conv = nn.Conv2d\n    same = conv(1, 2, 3, padding='same')\n", 1),
        (_OPS + "def f(x):\n    return x.to(torch.half)\n", 1),
        (_OPS + "def f(x, m, v):\n    return F.batch_norm(x, m, v, None, None, True)\n", 1),
        (_OPS + "def f(x):\n    return x.topk(3, 1, False)\n", 1),
        # a parameter's default is not a use (the pre-screen may keep it; nothing is found)
        (_INIT.format(params=", norm_layer=nn.LayerNorm", body="self.n = norm_layer(8)"), 0),
    ],
    ids=["partial", "module-alias", "chained-alias", "or-alias", "annotated-alias", "import-as", "local-alias-argument",
         "partial-argument", "positional-string", "nested-parentheses", "constant-argument", "class-level-alias",
         "dtype-alias", "positional-bool", "positional-topk", "default"],
)
def test_pre_screen_finds_operators_however_they_are_named(text, count):
    """The operators family's trigger sees what its extractor sees (found on timm: ``partial(nn.LayerNorm, ...)``)."""
    found = _static_findings("t.py", text)
    assert len(found) == count
    assert found == _full_parse_findings("t.py", text)


def test_walk_sees_every_node_libcst_visit_sees_except_punctuation():
    """The fast read-only walk calls the same visit_ methods on the same nodes as
    ``Module.visit``, except whitespace and punctuation nodes, which no rule reads."""
    module = cst.parse_module((FIXTURES / "upsampling_flagged.py").read_text())

    class Recorder(cst.CSTVisitor):
        def __init__(self) -> None:
            self.seen: list[int] = []

        def on_visit(self, node: cst.CSTNode) -> bool:
            if not isinstance(node, _TRIVIA):
                self.seen.append(id(node))
            return True

    by_libcst, by_walk = Recorder(), Recorder()
    module.visit(by_libcst)
    walk(module, by_walk)
    assert sorted(by_walk.seen) == sorted(by_libcst.seen)
    assert len(by_walk.seen) > 500


_CHECK_FILE = static.check_file


def _check_file_with_pid(path, target, config):
    text, _, findings = _CHECK_FILE(path, target, config)
    return text, str(os.getpid()), findings


def test_many_files_are_checked_in_worker_processes_with_the_same_results(tmp_path, monkeypatch):
    """Folders of 16+ files spread over the free cores (forked workers); same results, same order."""
    sources = sorted(FIXTURES.glob("*.py"))
    files = []
    for index in range(24):
        path = tmp_path / f"m{index:02}.py"
        path.write_text(sources[index % len(sources)].read_text())
        files.append(path)
    target, config = target_of("caffe2"), Config()
    serial = [static.check_file(path, target, config) for path in files]
    assert static._check_files(files, target, config) == serial
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: the files are checked in this process")
    monkeypatch.setattr(static, "check_file", _check_file_with_pid)
    pids = {why for _, why, _ in static._check_files(files, target, config)}
    assert len(pids) >= 2 and str(os.getpid()) not in pids

"""The report path's ``ast`` ports (``static.fast_rules``) against the families' libcst extractors.

``check_source`` runs the families with a port on an ``ast`` tree; a port must give the very
facts its family's ``extract`` gives, at the very positions libcst reports. The pre-screen tests
(``test_static.py``) compare whole findings with a full libcst parse; here each port is compared
with its extractor directly, fact for fact, on every fixture that compiles.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from modelcheck.config import Config
from modelcheck.rules import FAMILIES
from modelcheck.static.fast import AstSource, Unsupported
from modelcheck.static.fast_rules import EXTRACTORS
from modelcheck.static.run import check_source
from modelcheck.static.source import SourceFile
from static_helpers import target_of
from test_static import _full_parse_findings

FAMILY = {family.name: family for family in FAMILIES}


def _compiles(path: Path) -> bool:
    try:
        compile(path.read_text(encoding="utf-8"), str(path), "exec", dont_inherit=True)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return False
    return True


FIXTURES = [path for path in sorted((Path(__file__).parent / "fixtures").rglob("*.py")) if _compiles(path)]


def _ported(path: str, text: str, name: str) -> list[tuple]:
    source = AstSource.parse(path, text, text, None)
    return [(source.location(node), facts) for node, facts in EXTRACTORS[name](source)]


def _extracted(path: str, text: str, name: str) -> list[tuple]:
    source = SourceFile.parse(path, text)
    return [(source.location(node), facts) for node, facts in FAMILY[name].extract(source)]


def test_the_families_the_static_pass_runs_most_have_a_port():
    """Only porting goes to libcst: a family without a port costs every file it triggers on a
    libcst import and parse (the operators family took timm's static pass from 3 s to 11-14 s)."""
    assert set(FAMILY) - set(EXTRACTORS) == {"porting"}


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_each_port_gives_the_facts_and_positions_of_its_extractor(fixture):
    text = fixture.read_text(encoding="utf-8")
    for name in sorted(EXTRACTORS):
        assert _ported(str(fixture), text, name) == _extracted(str(fixture), text, name), name


def test_the_operators_fixture_is_read_on_the_ast_path():
    """Its every construct comes out of the port, none is declined to libcst."""
    fixture = Path(__file__).parent / "fixtures" / "static" / "operators.py"
    found = _ported(str(fixture), fixture.read_text(encoding="utf-8"), "operators")
    assert len(found) >= 25
    assert {facts.api for _, facts in found} >= {"torch.nn.LayerNorm", "torch.Tensor.__pow__", "torch.Tensor.flip",
                                                  "torch.pow", "torch.nn.Conv2d"}


@pytest.mark.parametrize(
    "text",
    [
        "def f(x):\n    return f'{x ** 2}'\n",
        "import torch\n\n\ndef f(x):\n    return f'{torch.pow(x, 2)}'\n",
    ],
    ids=["power", "call"],
)
def test_a_finding_inside_an_f_string_is_left_to_libcst(text):
    """ast positions inside an f-string are not libcst's (Python 3.11): the port declines the file
    and ``check_source`` checks it with libcst, finding what a full parse finds."""
    with pytest.raises(Unsupported):
        _ported("t.py", text, "operators")
    findings = check_source("t.py", text, target_of("caffe2"), Config())
    assert [f.code for f in findings] == ["MC502"]
    assert {(f.code, f.location.line, f.location.column, f.location.end_line, f.location.end_column,
             f.severity.value, f.message) for f in findings} == _full_parse_findings("t.py", text)

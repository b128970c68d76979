"""MC401-MC405: Python 3 porting blockers, on a package in the style of 2018 research code."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from modelcheck.rules import RULES_BY_CODE, porting
from static_helpers import FIXTURES, expected, findings, findings_in, found, make_package

PACKAGE = Path(__file__).parent / "fixtures" / "porting" / "legacynet"
BLOCKERS = FIXTURES / "porting_blockers.py"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_blocker_in_the_package_is_found_at_its_line_and_nothing_else(path):
    assert found(path, prefix="MC4") == expected(path)


def test_blockers_outside_a_package_and_their_look_alikes():
    assert sum(expected(BLOCKERS).values()) >= 15
    assert found(BLOCKERS) == expected(BLOCKERS)


@pytest.mark.parametrize("target", ["caffe2", "caffe2@11", "onnx@9", "onnx@17"])
def test_errors_at_every_target(target):
    """The model does not build at all, whatever it is exported for."""
    severities = Counter(f.severity.value for f in findings(PACKAGE / "sknet.py", target) if f.code.startswith("MC4"))
    assert set(severities) == {"error"} and sum(severities.values()) == sum(expected(PACKAGE / "sknet.py").values())


def test_static_only():
    """The model does not build at all: there is nothing for the dynamic pass to see."""
    for rule in porting.RULES:
        assert rule.static and RULES_BY_CODE[rule.code] is rule


def test_no_package_no_relative_import(tmp_path):
    (tmp_path / "settings.py").write_text("x = 1\n")
    (tmp_path / "model.py").write_text("import settings\n")
    assert not findings(tmp_path / "model.py")  # a script folder: Python 3 finds settings.py too
    (tmp_path / "__init__.py").write_text("")
    assert [f.code for f in findings(tmp_path / "model.py")] == ["MC401"]


def test_sibling_package_counts_and_the_messages_say_why(tmp_path):
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "backbones").mkdir()
    (tmp_path / "backbones" / "__init__.py").write_text("")
    (tmp_path / "net.py").write_text("from backbones import resnet\nimport backbones.resnet\nimport json\n")
    hits = findings(tmp_path / "net.py")
    assert [(f.code, f.location.line, f.fixable) for f in hits] == [("MC401", 1, True), ("MC401", 2, False)]
    assert "ModuleNotFoundError" in hits[0].message and "not rewritten" in hits[1].message


def test_division_messages_name_the_sink():
    text = ("import torch.nn as nn\n\n\ndef head(c):\n    mid = c / 2\n    k = mid\n    return nn.Linear(5 * k, 3)\n")
    [hit] = findings_in(text)
    assert (hit.code, hit.location.line) == ("MC402", 5)
    assert "`c / 2`" in hit.message and "nn.Linear()" in hit.message and "TypeError" in hit.message


@pytest.mark.parametrize("text", [
    "import torch.nn as nn\n\n\ndef head(c):\n    return nn.Conv2d(c, int(c / 2), 1)\n",
    "import torch.nn as nn\n\n\ndef head(c):\n    return nn.Conv2d(c, round(c / 2), 1)\n",
    "import math\nimport torch.nn as nn\n\n\ndef head(c):\n    return nn.Conv2d(c, math.floor(c / 2), 1)\n",
    "import torch.nn as nn\n\n\ndef head(c):\n    return nn.Conv2d(c, c / 2.0, 1)\n",  # a float was meant
    "import torch.nn as nn\n\n\ndef head(p):\n    return nn.Dropout(p / 2), nn.LeakyReLU(negative_slope=p / 4)\n",
    # Python 3 syntax: the file was written for true division
    "import torch.nn as nn\n\n\ndef head(c) -> nn.Module:\n    return nn.Conv2d(c, c / 2, 1)\n",
    "from __future__ import absolute_import\nimport torch.nn as nn\n",
])
def test_not_flagged(text):
    assert not [f for f in findings_in(text) if f.code.startswith("MC4")]


def test_shims_bind_the_python2_names():
    text = "try:\n    xrange\nexcept NameError:\n    xrange = range\nfor i in xrange(3):\n    pass\n"
    assert not findings_in(text)
    assert not findings_in("from six.moves import xrange\nfor i in xrange(3):\n    pass\n")
    assert [f.code for f in findings_in("for i in xrange(3):\n    pass\n")] == ["MC403"]


def test_guarded_removed_imports_are_not_flagged():
    text = ("try:\n    from torchvision.models.utils import load_state_dict_from_url\n"
            "except ImportError:\n    from torch.hub import load_state_dict_from_url\n")
    assert not findings_in(text)


def test_trigger_is_a_superset_on_python3_syntax_in_strings():
    """A docstring that mentions `super()` does not make a Python 2 file Python 3 for the pre-screen."""
    text = ('"""call super() yourself"""\nimport torch.nn as nn\n\n\ndef head(c):\n    mid = c / 2\n'
            "    return nn.Conv2d(c, mid, 1)\n")
    assert not findings_in(text)  # extract reads the docstring too: the file counts as Python 3
    assert porting.TRIGGER.search("def f(c):\n    return nn.Conv2d(c, c / 2, 1)\n")




def test_python3_files_have_no_implicit_relative_imports(tmp_path):
    """utils/logging.py next to a Python 3 utils/train_utils.py: `import logging` is the stdlib's
    (Python 3 code has absolute imports only), and so is a sibling config.py's name."""
    utils = make_package(tmp_path / "utils", "logging", "config")
    path = utils / "train_utils.py"
    path.write_text("import logging\nimport config\n\n\nclass Meter(object):\n"
                    "    def __init__(self) -> None:\n        super().__init__()\n"
                    "        self.log = logging.getLogger(config.x)\n")
    assert not [f for f in findings(path) if f.code.startswith("MC4")]


def test_a_sibling_shadowing_the_stdlib_or_an_installed_module_is_a_warning_not_rewritten(tmp_path):
    """Python 2 code importing a sibling that has the name of a stdlib or installed module: Python 2
    took the sibling, but the code may mean the other one, so it is only a warning, not fixable."""
    package = make_package(tmp_path / "pkg", "logging", "libcst", "config")
    path = package / "train.py"
    path.write_text("import logging\nfrom libcst import x\nimport config\n")
    hits = {f.location.line: f for f in findings(path)}
    assert [(n, hits[n].code, hits[n].severity.value, hits[n].fixable) for n in sorted(hits)] == [
        (1, "MC401", "warning", False), (2, "MC401", "warning", False), (3, "MC401", "error", True)]
    assert "the standard library's logging" in hits[1].message and "not rewritten" in hits[1].message
    assert "libcst installed at" in hits[2].message


def test_a_module_importing_its_own_name_means_the_other_module(tmp_path):
    """timm/utils/random.py: `import random` is the stdlib's (a module never imports itself)."""
    package = make_package(tmp_path / "utils", "random", "helpers")
    path = package / "random.py"
    path.write_text("import random\nimport helpers\n")
    assert [(f.code, f.location.line) for f in findings(path)] == [("MC401", 2)]


def test_an_import_after_a_semicolon_or_colon_is_found():
    """The pre-screen read only imports at the start of a line: `import os; import config` was missed."""
    for text in ("import os; import config\n", "x = 1; import config\n", "if True: import config\n",
                 "import numpy as np, config\n"):
        assert porting.TRIGGER.search(text), text
    assert not porting.TRIGGER.search("import os\nfrom torch import nn, optim\nimport torch.nn as nn\n")


def test_import_semicolon_sibling_is_flagged(tmp_path):
    package = make_package(tmp_path / "pkg", "config")
    (package / "net.py").write_text("import os; import config\n")
    assert [(f.code, f.fixable) for f in findings(package / "net.py")] == [("MC401", True)]


def test_only_the_import_rules_break_when_their_file_is_imported():
    """MC402/MC403/MC405 inside a function the model never calls are not the model's."""
    assert {rule.code for rule in porting.RULES if rule.import_time} == {"MC401", "MC404"}


# ----- the removed-API table, re-measured against the installed torch/torchvision ----------------

def _import_fails(statement: str) -> bool:
    proc = subprocess.run([sys.executable, "-c", statement], capture_output=True, text=True, timeout=120)
    return proc.returncode != 0 and ("ImportError" in proc.stderr or "ModuleNotFoundError" in proc.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("entry", porting.REMOVED, ids=lambda e: f"{e.module}:{e.name}")
def test_every_removed_api_is_really_gone(entry):
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    module = entry.module.replace(".*", ".resnet")
    statement = f"from {module} import {entry.name}" if entry.name else f"import {module}"
    assert _import_fails(statement), f"{statement} works in this environment: {entry} is not removed"


@pytest.mark.slow
@pytest.mark.parametrize("entry", [e for e in porting.REMOVED if e.replacement], ids=lambda e: e.name)
def test_every_replacement_imports_and_matches_the_old_value(entry):
    pytest.importorskip("torch")
    code = entry.replacement.format(as_name=entry.name, as_clause="")
    namespace: dict = {}
    exec(code, namespace)  # the replacement statement works here
    old = {"container_abcs": __import__("collections.abc").abc, "int_classes": int, "string_classes": (str, bytes),
           "inf": float("inf"), "nan": None}
    if entry.name in old and entry.name != "nan":
        assert namespace[entry.name] == old[entry.name]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(porting.FIRST_FLOAT_POSITION))
def test_float_parameter_table_matches_torch(name):
    """FIRST_FLOAT_POSITION's positions are torch's: the parameter there takes a float."""
    import inspect

    nn = pytest.importorskip("torch.nn")
    if name in ("RNN", "LSTM", "GRU"):
        return  # *args signatures: (input_size, hidden_size, num_layers, bias, batch_first, dropout)
    params = [p for p in inspect.signature(getattr(nn, name).__init__).parameters.values() if p.name != "self"]
    first = porting.FIRST_FLOAT_POSITION[name]
    assert params[first].name in porting.FLOAT_KEYWORDS, (name, params[first].name)


@pytest.mark.slow
def test_float_sizes_really_fail_in_current_torch():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError):
        torch.nn.Conv2d(256, 256 / 2, kernel_size=1)
    with pytest.raises(TypeError):
        torch.nn.BatchNorm2d(256 / 2)
    with pytest.raises(TypeError):
        torch.zeros(4).view(2.0, 2)
    assert torch.nn.Conv2d(256, 256 // 2, kernel_size=1).out_channels == 128

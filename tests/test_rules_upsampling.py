"""MC2xx: upsampling ONNX export or Caffe2 gets wrong, per target, however it is imported."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
from modelcheck.rules import upsampling
from modelcheck.static.source import UNKNOWN
from static_helpers import FIXTURES, expected, findings, findings_in, found

FLAGGED = FIXTURES / "upsampling_flagged.py"
FINE = FIXTURES / "upsampling_fine.py"


def test_every_import_style_and_argument_form_is_found_at_its_line():
    assert sum(expected(FLAGGED).values()) >= 30
    assert found(FLAGGED, prefix="MC2") == expected(FLAGGED)


@pytest.mark.parametrize("target", ["caffe2", "onnx@9"])
def test_nearest_with_a_constant_scale_and_look_alikes_are_not_findings_at_opset_9(target):
    """Nearest with a constant scale exports and runs right at opset 9 (measured in ORT and
    Caffe2); a method named upsample, a local interpolate and comments/strings are not torch's."""
    assert found(FINE, target) == {}


def _calls(path, target):
    return Counter(f.location.line for f in findings(path, target) if f.code == "MC204")


def test_every_resize_fails_in_caffe2_from_opset_11():
    """Caffe2 has no Resize: at caffe2@11 every upsample is an MC204 error, nearest included,
    and the opset-9 problems (MC201-MC203) no longer apply."""
    hits = findings(FLAGGED, "caffe2@11") + findings(FINE, "caffe2@11")
    assert {f.code for f in hits} == {"MC204", "MC205"}
    assert all(f.severity.value == "error" for f in hits if f.code == "MC204")
    fine_lines = FINE.read_text().splitlines()
    flagged_fine = {fine_lines[line - 1].strip().split(" = ")[0] for line in _calls(FINE, "caffe2@11")}
    assert flagged_fine == {"self.up", "self.up2", "self.up3", "a", "b", "c"}
    assert sum(_calls(FLAGGED, "caffe2@11").values()) == len({line for line, _, _ in expected(FLAGGED)})


def test_onnx_runtime_at_opset_17_only_hears_about_deprecated_names():
    hits = findings(FLAGGED, "onnx@17")
    assert {(f.code, f.severity.value) for f in hits} == {("MC205", "info")}


def test_onnx_at_opset_9_shape_sized_linear_resize_is_a_warning_linear_mode_an_error():
    by_code = Counter((f.code, f.severity.value) for f in findings(FLAGGED, "onnx@9"))
    assert by_code[("MC201", "error")] > 0
    assert by_code[("MC203", "warning")] > 0
    assert ("MC203", "error") not in by_code
    assert ("MC204", "error") not in by_code


def test_unknown_mode_says_may_and_is_one_step_milder():
    hits = findings_in(
        "import torch.nn.functional as F\n"
        "class D:\n"
        "    def forward(self, x):\n"
        "        return F.interpolate(x, scale_factor=2, mode=self.upscale_mode)\n"
    )
    assert [(f.code, f.severity.value) for f in hits] == [("MC201", "warning")]
    assert "may" in hits[0].message and "not known statically" in hits[0].message


def test_nearest_to_a_shape_derived_size_is_only_a_note():
    """Measured exact in ONNX Runtime and Caffe2 at opset 9 (a 16x16 map to 33x33 included)."""
    hits = findings_in("import torch.nn.functional as F\ndef f(x, y):\n    return F.interpolate(x, size=y.shape[2:])\n")
    assert [(f.code, f.severity.value) for f in hits] == [("MC203", "info")]


def test_alias_and_partial_of_interpolate_are_seen():
    hits = findings_in(
        "import functools\nimport torch.nn.functional as F\n"
        "def f(x):\n"
        "    up = F.interpolate\n"
        "    return up(x, scale_factor=2, mode='bilinear')\n"
        "resize = functools.partial(F.interpolate, mode='bicubic')\n"
    )
    assert [(f.location.line, f.code) for f in hits if f.code in ("MC201", "MC206")] == [(5, "MC201"), (6, "MC206")]


def test_finding_spans_the_whole_call():
    hit = next(f for f in findings(FLAGGED) if f.code == "MC201" and "G.interpolate" in f.source_line)
    line = hit.source_line
    assert line[hit.location.column - 1:].startswith("G.interpolate(")
    assert hit.location.end_line == hit.location.line
    assert line[: hit.location.end_column - 1].endswith('"bilinear")')


@pytest.mark.slow
def test_api_table_matches_torch_signatures():
    """The positions modelcheck binds arguments to are torch's (checked against torch itself)."""
    import inspect

    import torch.nn as nn
    import torch.nn.functional as F

    for qualname, api in upsampling.APIS.items():
        module = F if ".functional." in qualname else nn
        fn = getattr(module, qualname.rsplit(".", 1)[-1])
        params = list(inspect.signature(fn).parameters)
        assert tuple(params[: len(api.params)]) == api.params, qualname


def test_a_class_whose_name_fixes_the_mode_is_named_without_a_mode_argument():
    """``UpsamplingBilinear2d`` takes no ``mode``: the message names the class, not ``(mode='bilinear')``."""
    hits = findings_in("import torch.nn as nn\nup = nn.UpsamplingBilinear2d(scale_factor=2)\n")
    mc202 = next(f for f in hits if f.code == "MC202")
    assert mc202.message.startswith("UpsamplingBilinear2d with align_corners=True")


def test_a_traced_one_pixel_input_clears_the_linear_upsampling_rules():
    """From a 1×1 map every mode repeats the one pixel, and so does ONNX Upsample: the image-pooling
    branch of an ASPP (``F.interpolate(pooled, size=x.shape[2:], mode="bilinear")``) is exact at
    opset 9 (re-measured in tests/test_evidence.py). Source alone cannot know the size: only a
    traced call clears MC201/MC203, and only for a 1×1 input."""
    rules = {rule.code: rule for rule in upsampling.RULES}
    pooled = upsampling.UpsampleFacts(api="torch.nn.functional.interpolate", mode="bilinear", align_corners=False,
                                      size_from_shape=True, size=(33, 33), input_size=(1, 1))
    for code in ("MC201", "MC203"):
        assert rules[code].cleared_by(pooled) and rules[code].match(pooled) is None
        for other in (replace(pooled, input_size=(2, 2)), replace(pooled, input_size=UNKNOWN)):
            assert not rules[code].cleared_by(other) and rules[code].match(other) is not None

"""MC501/MC502/MC503: every operator looked up in the measured compatibility table.

The static cases are the fixture's ``# expect:`` markers; the table-wide tests match every probe's
own facts against the table (a passing variant is never flagged, a failing one always is, by the
rule of its kind); live facts come from real tensors and layers; the slow tests run models of
failing and of passing operators through the real exporter, ONNX Runtime and Caffe2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from conftest import require_caffe2
from modelcheck.ops import table as optable
from modelcheck.rules import FAMILIES, codes_predicting
from modelcheck.rules import operators as ops
from modelcheck.rules.base import matches_for
from modelcheck.targets import Target, make_target
from static_helpers import FIXTURES, expected, found

OPERATORS = FIXTURES / "operators.py"
MODELCHECK = Path(sys.executable).with_name("modelcheck")


def fires(facts: ops.OperatorFacts, target: str = "caffe2@9") -> dict[str, tuple[str, str]]:
    """Code → (severity, message) of the rules that fire on ``facts`` at ``target``."""
    name, _, opset = target.partition("@")
    return {rule.code: (severity.value, match.message)
            for rule, match, severity in matches_for(ops.RULES, facts, make_target(name, int(opset)))}


# ----- static -------------------------------------------------------------------------------------

def test_every_operator_the_table_fails_is_found_at_its_line_and_nothing_else():
    assert sum(expected(OPERATORS).values()) >= 25
    assert found(OPERATORS, prefix="MC5") == expected(OPERATORS)


def test_the_verdict_follows_the_target_and_opset():
    """onnx@17 exports nearly everything (ChannelShuffle and MultiheadAttention do not, measured);
    caffe2@11 fails more (Clip, every Pad); an opset, an exporter or a target the table did not
    measure gets no finding."""
    lines = {line for line, _, _ in expected(OPERATORS)}
    at17 = found(OPERATORS, "onnx@17", prefix="MC5")
    assert {(code, severity) for _, code, severity in at17} == {("MC501", "error")} and len(at17) == 2
    at11 = found(OPERATORS, "caffe2@11", prefix="MC5")
    assert {line for line, _, _ in at11} - lines  # ReLU6, reflect padding, clamp: opset 11 only
    assert found(OPERATORS, "caffe2@10", prefix="MC5") == {}
    dynamo = make_target("onnx", 18, "dynamo")
    assert all(rule.verdict(dynamo) is None for rule in ops.RULES)
    assert all(rule.verdict(Target("tflite", 0)) is None for rule in ops.RULES)


def test_what_other_families_own_is_theirs_where_they_have_a_rule():
    """An API another family owns is looked up too, but at a target where one of the owner's rules
    has a verdict (every ONNX target for upsampling and pooling) its fixtures' lines get no MC5xx
    finding: one construct, one family's findings."""
    others = {api for family in FAMILIES if family.name != ops.NAME for api in family.layer_apis | family.call_apis}
    assert others and others == ops.OWNED
    assert "torch.nn.MaxPool2d" in others and "torch.nn.functional.interpolate" in others
    assert ops.FAMILY.fallback and not any(family.fallback for family in FAMILIES if family is not ops.FAMILY)
    for fixture in ("upsampling_flagged.py", "pooling.py", "adaptive_pooling.py"):
        theirs = {line for line, _, _ in expected(FIXTURES / fixture)}
        for target in ("caffe2@9", "caffe2@11", "onnx@9", "onnx@17"):
            assert theirs and not {line for line, _, _ in found(FIXTURES / fixture, target, prefix="MC5")} & theirs


def test_where_the_owner_has_no_rule_the_table_speaks_for_its_api():
    """ExecuTorch's export takes only Core ATen operators: adaptive max pooling fails there
    (measured), and no adaptive-pooling rule has a verdict at executorch, so MC501 reports it; at
    caffe2 the adaptive-pooling rules decide (MC601/MC602)."""
    probe = ops.TABLE.probes["F.adaptive_max_pool2d(output_size=1)"]
    executorch, caffe2 = make_target("executorch"), make_target("caffe2", 9)
    assert ops.deferred(probe, caffe2) and not ops.deferred(probe, executorch)
    facts = ops.OperatorFacts("torch.nn.functional.adaptive_max_pool2d", (("global", True),))
    claim = ops.RULES[0].match_at(facts, executorch)
    assert claim is not None and claim.certain and "not in Core ATen opset" in claim.message
    assert "torch.export + XNNPACK (executorch 1.4.1" in claim.message
    assert ops.RULES[0].match_at(facts, caffe2) is None


def test_an_owner_rule_covers_only_what_it_decides():
    """MC207 decides bilinear resizing by a scale factor at LiteRT, not nearest resizing (LiteRT's
    nearest resize by 0.5 computes something else, measured: the table's to say); no adaptive
    pooling rule has a verdict at LiteRT, where adaptive max pooling does not convert; MC302 covers
    ceil_mode pools at ncnn, not divisor_override; no pooling rule speaks at ExecuTorch."""
    litert = make_target("litert")
    bilinear = ops.TABLE.probes["F.interpolate(scale_factor=1.5, mode='bilinear', align_corners=False)"]
    nearest = ops.TABLE.probes["F.interpolate(scale_factor=0.5, mode='nearest')"]
    assert ops.deferred(bilinear, litert) and not ops.deferred(nearest, litert)
    assert ops.deferred(nearest, make_target("caffe2", 9))  # every MC2xx rule covers all interpolation there
    facts = ops.OperatorFacts("torch.nn.AdaptiveMaxPool2d", (("global", True),))
    claim = ops.RULES[0].match_at(facts, litert)
    assert claim is not None and "litert_torch.convert" in claim.message and "Lowering not found" in claim.message
    # MC302 decides ceil_mode pools at ncnn, not divisor_override, which ncnn cannot load at all
    ncnn = make_target("ncnn")
    divisor = ops.OperatorFacts("torch.nn.AvgPool2d", (("ceil_mode", False), ("count_include_pad", True),
                                                       ("divisor_override", 3), ("padding", 0)))
    claim = ops.RULES[1].match_at(divisor, ncnn)
    assert claim is not None and claim.certain and "avgpool2d_0 failed" in claim.message
    # and no pooling rule speaks at ExecuTorch, which cannot load a 3-d pool
    pool3d = ops.RULES[1].match_at(ops.OperatorFacts("torch.nn.MaxPool3d", (("ceil_mode", False),)),
                                   make_target("executorch"))
    assert pool3d is not None and "ExecuTorch" in pool3d.message


# ----- the table, probe by probe -------------------------------------------------------------------

def _own_facts(probe: optable.ProbeInfo, api: str, rank: bool = True) -> ops.OperatorFacts:
    facts = {**probe.args, **probe.facts, **{k: v for k, v in probe.soft.items() if k == "index"}}
    if rank:
        facts["input_rank"] = probe.soft["input_rank"]
    return ops.OperatorFacts(api, tuple(facts.items()))


def test_a_variant_that_passes_is_never_flagged_and_one_that_fails_always_is():
    """Every probe of the family's APIs, matched on its own facts, at every measured cell: no
    finding where it passed, and where it failed the rule of that kind (MC501 export, MC502
    checker or runtime, MC503 outputs). A probe that cannot stand for an API's calls (no fact a
    call could agree with, not its plainest probe: ``torch.maximum(x, y)`` for ``torch.max``) is
    never matched to them, so it is not asked about that API. A cell that failed at the probe's
    boundary (``at_the_boundary``) is no evidence about the operator: not claimed."""
    checked = 0
    for probe in ops.PROBES.values():
        for api in {api for api in set(probe.apis) & ops.APIS if ops.stands_for(probe, api)}:
            for (name, opset), verdict in zip(optable.CELLS, ops.TABLE.row(probe.key), strict=True):
                got = ops.outcome(_own_facts(probe, api), name, opset)
                checked += 1
                if verdict == "ok":
                    assert got is None, (probe.key, api, name, opset, got)
                elif verdict in ops.FAILING and not ops.at_the_boundary(ops.TABLE.cell(probe.key, name, opset)):
                    assert got is not None and got.cell.verdict == verdict, (probe.key, api, name, opset)
                    assert len([rule for rule in ops.RULES if verdict in rule.verdicts]) == 1
    assert checked > 1000


def test_an_operator_that_passes_everywhere_is_not_even_looked_up():
    """Passing: ok, or converted where the target has no runtime here (Core ML: not_run)."""
    everywhere = {api for probe in ops.TABLE.probes.values() if set(ops.TABLE.row(probe.key)) <= {"ok", "not_run"}
                  for api in probe.apis}
    failing = {api for probe in ops.TABLE.probes.values() if set(ops.TABLE.row(probe.key)) & ops.FAILING
               for api in probe.apis if ops.stands_for(probe, api)}  # permute in ``...view(n, -1, c)``: the view's
    assert {"torch.cat", "torch.nn.ReLU", "torch.Tensor.permute", "torch.matmul"} <= everywhere - failing
    assert not (everywhere - failing) & ops.APIS


def test_the_facts_that_decide_come_from_the_table():
    assert ops.TABLE.deciding_keys("torch.nn.Conv2d") == {"padding", "padding_mode"}  # not groups, dilation
    assert ops.TABLE.deciding_keys("torch.pow") == {"exponent"}
    # fails in Caffe2 whatever its arguments; ncnn computes the (C, H, W) one wrongly, which the
    # table can only tell from the elementwise_affine=False probe by that fact
    assert ops.TABLE.deciding_keys("torch.nn.LayerNorm") == {"elementwise_affine"}


# ----- rules and messages ----------------------------------------------------------------------------

def test_messages_quote_what_was_measured_and_where():
    layer_norm = fires(ops.OperatorFacts("torch.nn.LayerNorm"))
    severity, text = layer_norm["MC502"]
    assert severity == "error" and text.startswith("nn.LayerNorm: Caffe2 (torch 1.7.1) fails to run it")
    assert "pow_op.h:97" in text and "(ONNX Pow)" in text and "at opset 9" in text
    severity, text = fires(ops.OperatorFacts("torch.einsum"), "onnx@11")["MC501"]
    assert "the TorchScript exporter (torch" in text and "'aten::einsum' to ONNX opset version 11" in text
    severity, text = fires(ops.OperatorFacts("torch.nn.Conv2d", (("padding", "same"), ("padding_mode", "zeros"))))[
        "MC503"]
    assert "runs it and computes something else" in text and "nn.Conv2d (padding='same')" in text


def test_an_unknown_deciding_argument_is_a_may_and_the_traced_value_settles_it():
    unknown = fires(ops.OperatorFacts("torch.pow", (("exponent", ops.UNKNOWN),)))
    assert unknown["MC502"][0] == "warning" and "exponent not known statically" in unknown["MC502"][1]
    x = torch.randn(1, 4, 6, 6)
    assert fires(ops.call_facts("torch.pow", (x, x), {}, True)) == {}  # a tensor exponent: measured fine
    assert fires(ops.call_facts("torch.pow", (x, 2), {}, True))["MC502"][0] == "error"
    # the plainest variant decides when an argument is unknown: padding=p is taken as a number
    assert fires(ops.OperatorFacts("torch.nn.Conv2d", (("padding", ops.UNKNOWN), ("padding_mode", "zeros")))) == {}


def test_each_rule_predicts_the_stage_its_measurements_are_about():
    assert "MC501" in codes_predicting("export", "failed")
    assert {"MC502"} <= set(codes_predicting("caffe2", "failed")) & set(codes_predicting("onnx_check", "failed"))
    assert "MC502" in codes_predicting("onnxruntime", "crashed")
    assert "MC503" in codes_predicting("caffe2", "mismatch") and "MC503" in codes_predicting("onnxruntime", "mismatch")


def test_a_runtime_error_naming_a_failing_operator_is_about_this_family():
    pattern = ops.FAMILY.failing_ops
    assert pattern is not None
    for op in ("ReduceProd", "Pow", "ReduceLogSumExp", "ConvTranspose", "aten::einsum"):
        assert pattern.search(op), op
    assert not pattern.search("GlobalAveragePool") and not pattern.search("Relu")


def test_without_a_target_match_claims_nothing():
    """``Rule.match`` is not told the target: asked outside ``matches_for`` it knows none."""
    facts = ops.OperatorFacts("torch.nn.LayerNorm")
    assert all(rule.match(facts) is None for rule in ops.RULES)
    assert ops.RULES[1].match_at(facts, make_target("caffe2", 9)) is not None
    assert ops.RULES[1].match_at(facts, make_target("onnx", 17)) is None


# ----- live facts -------------------------------------------------------------------------------------

def test_facts_of_traced_calls_come_from_the_real_arguments():
    x = torch.randn(1, 4, 12, 12)
    step = ops.call_facts("torch.Tensor.__getitem__", (x, (slice(None), slice(None), slice(None, None, 2))), {}, True)
    assert dict(step.facts)["index"] == "step" and fires(step)["MC501"][0] == "error"
    mask = ops.call_facts("torch.Tensor.__getitem__", (x, x > 0), {}, True)
    assert dict(mask.facts)["index"] == "mask" and "MC502" in fires(mask)
    plain = ops.call_facts("torch.Tensor.__getitem__", (x, (slice(None), slice(0, 2))), {}, True)
    assert fires(plain) == {} and "MC503" in fires(plain, "caffe2@11")
    assert fires(ops.call_facts("torch.nn.functional.pad", (x, (1, 1, 1, 1), "reflect"), {}, True)) == {}
    flat = ops.call_facts("torch.nn.functional.pad", (x.flatten(2), (2, 2), "reflect"), {}, True)
    assert "MC502" in fires(flat)  # Caffe2 pads only 2-d maps
    assert "MC501" in fires(ops.call_facts("torch.chunk", (x, 3, 1), {}, True))
    assert fires(ops.call_facts("torch.chunk", (x, 2, 1), {}, True)) == {}
    assert "MC503" in fires(ops.call_facts("torch.Tensor.clamp", (x, x.mean(), x.mean() + 1), {}, True))
    assert fires(ops.call_facts("torch.Tensor.clamp", (x, 0, 1), {}, True)) == {}
    assert "MC502" in fires(ops.call_facts("torch.Tensor.to", (x, torch.float16), {}, True))
    assert fires(ops.call_facts("torch.Tensor.to", (x, "cpu"), {}, True)) == {}


def test_no_claim_where_the_probes_do_not_reach():
    """Shape arithmetic on 0-dim traced sizes (``c // heads``) is not the tensor arithmetic the probes
    measured, and a cell that failed at its probe's boundary (an output count) is no evidence."""
    def codes(facts: ops.OperatorFacts, target: str) -> set[str]:
        return {rule.code for rule, _, _ in matches_for(ops.RULES, facts, make_target(target))}

    x = torch.randn(1, 4, 12, 12) * 5
    on_tensors = ops.call_facts("torch.Tensor.__floordiv__", (x, 2), {}, True)
    assert codes(on_tensors, "litert") == {"MC501"} and codes(on_tensors, "ncnn") == {"MC503"}
    on_sizes = ops.call_facts("torch.Tensor.__floordiv__", (torch.tensor(16), 2), {}, True)
    assert dict(on_sizes.facts)["input_rank"] == 0 and not codes(on_sizes, "litert") | codes(on_sizes, "ncnn")
    traced_steps = ops.call_facts("torch.linspace", (-1.0, 1.0, torch.tensor(16)), {}, True)  # a fact decides
    assert dict(traced_steps.facts)["dynamic"] is True and codes(traced_steps, "coreml") == {"MC501"}
    key = "F.interpolate(size=y.shape[-2:], mode='nearest')"
    assert ops.TABLE.cell(key, "ncnn", 0).error.startswith("2 output(s), PyTorch has 1")
    sized = ops.call_facts("torch.nn.functional.interpolate", (x,),
                           {"size": (torch.tensor(24), torch.tensor(24)), "mode": "nearest"}, True)
    assert dict(sized.facts)["resize_by"] == "size_of_tensor" and not codes(sized, "ncnn")


def test_facts_of_built_layers_come_from_their_attributes():
    same = ops.layer_facts(nn.Conv2d(4, 4, 3, padding="same"), "torch.nn.Conv2d")
    assert "MC503" in fires(same)
    reflect = ops.layer_facts(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), "torch.nn.Conv2d")
    assert fires(reflect) == {} and "MC502" in fires(reflect, "caffe2@11")
    assert "MC503" in fires(ops.layer_facts(nn.ConvTranspose2d(4, 4, 3, dilation=2), "torch.nn.ConvTranspose2d"))
    assert fires(ops.layer_facts(nn.ConvTranspose2d(4, 4, 2, stride=2), "torch.nn.ConvTranspose2d")) == {}


# ----- the real exporter and runtimes --------------------------------------------------------------

MODELS = '''
import torch
import torch.nn as nn


class Std(nn.Module):
    def forward(self, x):
        return x / x.std(1, keepdim=True)


class Square(nn.Module):
    def forward(self, x):
        return x ** 2


class Failing(nn.Module):
    """Three operators Caffe2 fails on, each in its own block as in a real network."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.LayerNorm(33)
        self.square = Square()
        self.std = Std()

    def forward(self, x):
        x = self.conv(x)
        return self.std(self.square(self.norm(x)))


class Attention(nn.Module):
    def forward(self, x):
        q = x.flatten(2)
        return torch.einsum("bci,bdi->bcd", q, q)


class Exporting(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.attention = Attention()

    def forward(self, x):
        return self.attention(self.conv(x))


class Same(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding="same")

    def forward(self, x):
        return self.conv(x)


class Passing(nn.Module):
    """Only operators the table measured to pass everywhere."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = torch.sigmoid(self.dw(x)) * x + x * x
        y = torch.cat([x, x.permute(0, 1, 3, 2)], 1)[:, :8]
        return self.fc(y.mean((2, 3)).flatten(1)).softmax(-1)
'''


def _run(tmp_path: Path, model: str, *flags: str) -> dict:
    (tmp_path / "models.py").write_text(MODELS)
    proc = subprocess.run([str(MODELCHECK), "models.py", "--model", f"models.py:{model}", "--input-shape",
                           "1,3,33,33", "--format", "json", *flags],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


def _line(text: str) -> int:
    return MODELS.splitlines().index(text) + 1


def _mine(data: dict, model: str) -> list[dict]:
    return [f for f in data["findings"] if f["code"].startswith("MC5") and f.get("model") == f"models.py:{model}"]


@pytest.mark.slow
@pytest.mark.caffe2
def test_caffe2_fails_where_predicted_at_the_line_of_the_operator_it_names(tmp_path: Path):
    require_caffe2()
    data = _run(tmp_path, "Failing")
    stages = {s["name"]: s for s in data["stages"]}
    assert stages["export"]["status"] == stages["onnxruntime"]["status"] == "passed"
    caffe2 = stages["caffe2"]
    assert caffe2["status"] == "failed" and "ReduceProd" in caffe2["detail"]  # conversion fails first
    assert caffe2["predicted_by"] == ["MC502"]
    std = _line("        return x / x.std(1, keepdim=True)")
    assert caffe2["location"]["line"] == std
    lines = {f["line"] for f in _mine(data, "Failing") if f["code"] == "MC502"}
    assert lines == {std, _line("        return x ** 2"), _line("        self.norm = nn.LayerNorm(33)")}


@pytest.mark.slow
def test_an_export_failure_is_predicted_at_the_operator_line(tmp_path: Path):
    data = _run(tmp_path, "Exporting", "--target", "onnx", "--opset", "11")
    export = {s["name"]: s for s in data["stages"]}["export"]
    assert export["status"] == "failed" and "einsum" in export["detail"]
    assert export["predicted_by"] == ["MC501"]
    assert export["location"]["line"] == _line('        return torch.einsum("bci,bdi->bcd", q, q)')


@pytest.mark.slow
@pytest.mark.caffe2
def test_a_mismatch_is_predicted_and_an_operator_that_passes_everywhere_gets_nothing(tmp_path: Path):
    require_caffe2()
    same = {s["name"]: s for s in _run(tmp_path, "Same")["stages"]}["caffe2"]
    assert same["status"] == "mismatch" and same["predicted_by"] == ["MC503"]
    assert same["location"]["line"] == _line('        self.conv = nn.Conv2d(3, 4, 3, padding="same")')
    data = _run(tmp_path, "Passing")
    assert {s["name"]: s["status"] for s in data["stages"]} == {
        "export": "passed", "onnx_check": "passed", "onnxruntime": "passed", "caffe2": "passed"}
    assert _mine(data, "Passing") == []

"""MC301: ceil_mode=True pooling, by keyword or by position, in every form."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from modelcheck.rules import pooling
from static_helpers import FIXTURES, expected, findings, findings_in, found

POOLING = FIXTURES / "pooling.py"


def test_every_ceil_mode_pool_is_found_at_its_line_and_nothing_else():
    assert sum(expected(POOLING).values()) >= 18
    assert found(POOLING) == expected(POOLING)


def test_caffe2_from_opset_10_makes_it_an_error():
    """Caffe2 ignores ceil_mode from opset 10 and silently returns a smaller map."""
    at_9 = found(POOLING, "caffe2")
    at_11 = found(POOLING, "caffe2@11")
    milder = {"warning": "error", "info": "warning"}
    assert at_11 == Counter({(line, code, milder[severity]): n for (line, code, severity), n in at_9.items()})


def test_onnx_runtime_honours_ceil_mode_from_opset_10():
    assert found(POOLING, "onnx@17") == {}
    assert {severity for _, _, severity in found(POOLING, "onnx@9")} == {"warning", "info"}


def test_message_states_the_target_behaviour():
    hit = next(f for f in findings(POOLING, "caffe2@11") if f.severity.value == "error")
    assert "Caffe2 ignores ceil_mode from opset 10" in hit.message
    assert "smaller output" in hit.message
    assert "traced input size" in hit.message


def test_unknown_ceil_mode_says_may():
    hits = findings_in("import torch.nn as nn\ndef block(ceil):\n    return nn.MaxPool2d(2, ceil_mode=ceil)\n")
    assert [(f.code, f.severity.value) for f in hits] == [("MC301", "info")]
    assert "may use ceil_mode=True" in hits[0].message


# ceil and floor differ for a size-5 input with kernel 2, stride 2: 3 against 2
_VALUES = {"kernel_size": 2, "stride": 2, "padding": 0, "dilation": 1, "return_indices": False,
           "ceil_mode": True, "count_include_pad": True, "divisor_override": None}


@pytest.mark.slow
@pytest.mark.parametrize("qualname", sorted(pooling.SIGNATURES))
def test_ceil_mode_position_matches_torch(qualname):
    """Pass ceil_mode=True at the position SIGNATURES says, and torch rounds up: the table's
    positions are torch's (the functional forms have no introspectable signature)."""
    import torch

    params = pooling.SIGNATURES[qualname]
    dims = int(re.search(r"pool(\d)d", qualname, re.IGNORECASE).group(1))
    x = torch.zeros((1, 1) + (5,) * dims)
    owner, name = qualname.rsplit(".", 1)
    api = {"torch": torch, "torch.nn": torch.nn, "torch.nn.functional": torch.nn.functional}[owner]
    fn = getattr(api, name)
    positional = [_VALUES[p] if p != "input" else x for p in params[: params.index("ceil_mode") + 1]]
    out = fn(*positional)(x) if owner == "torch.nn" else fn(*positional)  # a module class, or a function
    out = out[0] if isinstance(out, tuple) else out
    assert tuple(out.shape[2:]) == (3,) * dims, qualname

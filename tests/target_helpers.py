"""Checks every target with an environment of its own repeats: its doctor runs the one-conv model
right, and a second ``--install`` installs nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from modelcheck.targets import get_profile


def assert_doctor_runs_the_one_conv_model(name: str, version: str, tmp_path: Path) -> None:
    """The target's row of ``modelcheck --doctor``: its version, the torch beside it, and outputs
    that match the doctor's model built here with the user's torch."""
    import numpy as np
    import torch

    run = get_profile(name).doctor(tmp_path / "conv.onnx", {}, 600.0)
    assert run.outputs is not None, run.detail
    assert run.version == version and "torch 2.13.0" in run.detail, (run.version, run.detail)
    torch.manual_seed(0)  # the doctor's model and input
    model = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        want = model(x).numpy()
    got = np.asarray(run.outputs[0])
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-4


def assert_install_is_idempotent(name: str, ready: str, tmp_path: Path) -> None:
    """With the environment complete, ``--install NAME`` says ``ready``, installs nothing and keeps
    its stamp."""
    from modelcheck.runtimes.envs import STAMP, env_dir

    stamp = env_dir(get_profile(name)) / STAMP
    before = stamp.stat().st_mtime_ns
    result = subprocess.run([sys.executable, "-m", "modelcheck", "--install", name], cwd=tmp_path,
                            capture_output=True, text=True, timeout=900)
    said = result.stdout + result.stderr
    assert result.returncode == 0, result.stderr
    assert ready in said and "pip install" not in said, said
    assert stamp.stat().st_mtime_ns == before

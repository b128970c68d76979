"""The environment decision in docs/evidence.md, re-measured.

This project's machines pin torch, torchvision and timm in ``constraints.txt`` so that audits
can build torchvision and timm backbones; the package itself must not pin an exact torch, so a
user's ``pip install 'modelcheck[runtime]'`` keeps the torch and torchvision they have.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_package_pins_no_exact_torch() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    requirements = re.findall(r'"((?:torch|torchvision|timm)\b[^"]*)"', pyproject)
    assert requirements, "the runtime/test extras name torch"
    assert not [r for r in requirements if "==" in r or "<" in r], requirements


def test_installed_versions_are_the_constraints() -> None:
    """make and CI install with ``-c constraints.txt``: the venv running the tests must match it."""
    for name, version in _constraints().items():
        installed = metadata.version(name)
        assert installed.split("+")[0] == version, f"{name}: {installed} installed, {version} pinned"


@pytest.mark.slow
def test_pinned_stack_imports_and_builds() -> None:
    """torch, torchvision and timm import together and build a backbone on the CPU (no GPU here)."""
    code = (
        "import time; t = time.monotonic()\n"
        "import torch, torchvision, timm\n"
        "imported = time.monotonic() - t\n"
        "m = torchvision.models.resnet18().eval()\n"
        "y = m(torch.randn(1, 3, 64, 64))\n"
        "t2 = timm.create_model('resnet18', pretrained=False).eval()(torch.randn(1, 3, 64, 64))\n"
        "print(imported, tuple(y.shape), tuple(t2.shape), torch.cuda.is_available())\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    imported, *rest = done.stdout.split(maxsplit=1)
    print(f"import torch, torchvision, timm: {float(imported):.2f} s; whole run {time.monotonic() - started:.1f} s")
    assert "(1, 1000) (1, 1000)" in rest[0]


@pytest.mark.slow
def test_runtime_extra_keeps_the_users_torch(tmp_path: Path) -> None:
    """pip's own resolver, asked to install modelcheck[runtime] here, plans to replace nothing of torch."""
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--quiet", "--report", str(report),
         "--disable-pip-version-check", f"{ROOT}[runtime]"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    requires = [r for item in json.loads(report.read_text())["install"]
                for r in item["metadata"].get("requires_dist", []) if r.startswith("torch")]
    assert requires and all("==" not in r.split(";")[0] for r in requires), requires
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
         "--disable-pip-version-check", f"{ROOT}[runtime]"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    planned = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert not planned & {"torch", "torchvision"}, planned

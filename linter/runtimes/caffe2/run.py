"""A real Caffe2 runtime: install it, check it, and run ONNX models on it.

Caffe2 is gone from PyTorch 2.x and no current wheel has it.  Debian 11
(bullseye) ships ``python3-torch`` 1.7.1 built with Caffe2 and its ONNX backend,
so modelcheck keeps a bullseye root file system under
``<home>/caffe2-bullseye/`` and runs ``job.py`` (as ``caffe2_job.py``) in it with ``chroot``,
inside a private mount namespace (``unshare --mount``) so that the ``/proc``
it needs never shows up among the host's mounts.

Caffe2 aborts or segfaults on some graphs, so every model runs in a child
process with a timeout: a crash becomes a result, never a crash of modelcheck.

This module is imported by the CLI and must stay cheap: it never imports torch,
and imports numpy and onnx only inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcheck.text import read_json, signal_name, write_json

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy

__all__ = [
    "Caffe2InstallError",
    "Caffe2Run",
    "RuntimeStatus",
    "check_runtime",
    "default_home",
    "host_debian_mirror",
    "install_runtime",
    "run_onnx",
    "runtime_status",
]

SUITE = "bullseye"
ROOT_NAME = "caffe2-bullseye"
MARKER_NAME = ".modelcheck-ready"  # JSON; the Makefile also looks for it
# Bump when the install recipe changes in a way older roots lack.
MARKER_FORMAT = 1
NOT_INSTALLED = "Caffe2 runtime not installed (run `modelcheck --install caffe2`)"

APT_PACKAGES = ("python3-torch", "python3-pip")
# bullseye's python3-onnx must not be used: it and libtorch both register
# onnx/onnx-ml.proto in one protobuf pool and the process aborts on import.
# --no-deps: onnx's own dependency resolution would pull a numpy 2 wheel over
# the numpy 1.19 that bullseye's torch was built against (six comes from apt).
WHEELS = ("onnx==1.10.2", "onnxoptimizer==0.2.6", "protobuf==3.20.3", "typing_extensions")
WHEEL_PLATFORMS = (
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)
# Inside the chroot.
WHEEL_DIR_IN_ROOT = "/opt/modelcheck/wheels"
STEPS_DIR_IN_ROOT = ".modelcheck-steps"

# Worker environment: a clean one, so the host's PYTHONPATH and friends never
# leak into the chroot's Python.  OpenBLAS/OpenMP tuning variables are passed on:
# on some processors they are what keeps an old OpenBLAS from wrong results.
_PASS_ENV_PREFIXES = ("OPENBLAS_", "OMP_", "MKL_", "GOTO")
# Debian's libgoogle-glog links the non-GNU libunwind, whose _Unwind_* symbols then
# win over libgcc_s's: every C++ exception Caffe2 throws (any failed CAFFE_ENFORCE)
# dies in __libunwind_Unwind_Resume with SIGSEGV/SIGABRT instead of becoming a
# Python RuntimeError.  Preloading libgcc_s puts its unwinder first.
_LIBGCC_S = "/lib/x86_64-linux-gnu/libgcc_s.so.1"
_STDERR_TAIL_LINES = 40


class Caffe2InstallError(RuntimeError):
    """The runtime cannot be installed here; the message is a one-line reason."""


@dataclass(frozen=True)
class RuntimeStatus:
    """Whether the Caffe2 runtime is usable, and if not, why and what to run."""

    installed: bool
    version: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Caffe2Run:
    """Outcome of converting and running one ONNX model on Caffe2.

    ``status`` "passed" only means the nets ran; comparing numbers is the
    caller's job.  ``stage`` says where a failure happened ("convert"/"run").
    """

    status: str  # "passed" | "failed" | "crashed" | "timeout" | "skipped"
    outputs: list[numpy.ndarray] | None
    convert_seconds: float | None
    run_seconds: float | None
    detail: str
    stage: str
    stderr_tail: str
    signal: int | None


# --------------------------------------------------------------------------- paths


def default_home() -> Path:
    """Where modelcheck keeps big downloads: ``$MODELCHECK_HOME`` or ~/.cache/modelcheck."""
    env = os.environ.get("MODELCHECK_HOME")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "modelcheck"


def _root(home: Path | None) -> Path:
    return (home if home is not None else default_home()) / ROOT_NAME


def _read_marker(root: Path) -> dict[str, Any] | None:
    return read_json(root / MARKER_NAME) or None


def _version_string(marker: Mapping[str, Any]) -> str:
    return f"caffe2 (torch {marker.get('torch', '?')})"


def runtime_status(home: Path | None = None) -> RuntimeStatus:
    """Cheap check (no process started): is a complete install present?"""
    root = _root(home)
    if not root.is_dir():
        return RuntimeStatus(False, None, NOT_INSTALLED)
    marker = _read_marker(root)
    if marker is None:
        return RuntimeStatus(
            False,
            None,
            f"Caffe2 runtime install at {root} is incomplete (run `modelcheck --install caffe2` to finish it)",
        )
    if marker.get("format") != MARKER_FORMAT:
        return RuntimeStatus(
            False,
            None,
            f"Caffe2 runtime at {root} was installed by another modelcheck version "
            "(run `modelcheck --install caffe2` to update it)",
        )
    if not (root / "usr/bin/python3").exists() or not (root / "usr/lib/python3/dist-packages/caffe2").is_dir():
        return RuntimeStatus(
            False,
            None,
            f"Caffe2 runtime at {root} is damaged (run `modelcheck --install caffe2` to repair it)",
        )
    return RuntimeStatus(True, _version_string(marker), None)


# ------------------------------------------------------------------- host mirror

_DEBIAN_SUITE = re.compile(
    r"^(buster|bullseye|bookworm|trixie|forky|duke|sid|stable|testing|unstable|oldstable|oldoldstable)"
    r"(-updates|-backports|-proposed-updates)?$"
)


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    """Yield the stanzas of a deb822 .sources file as {field-lowercase: value}."""
    stanza: dict[str, str] = {}
    last = None
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if stanza:
                yield stanza
            stanza, last = {}, None
            continue
        if raw[0] in " \t" and last:
            stanza[last] += " " + raw.strip()
            continue
        key, sep, value = raw.partition(":")
        if sep:
            last = key.strip().lower()
            stanza[last] = value.strip()


def _sources_entries(apt_dir: Path) -> Iterator[tuple[list[str], list[str], list[str]]]:
    """Yield (types, uris, suites) for every enabled entry of the host's apt sources."""
    sources_d = apt_dir / "sources.list.d"
    for path in sorted(sources_d.glob("*.sources")) if sources_d.is_dir() else []:
        with contextlib.suppress(OSError):
            for st in _deb822_stanzas(path.read_text()):
                if st.get("enabled", "yes").lower() == "no":
                    continue
                yield (
                    st.get("types", "").split(),
                    st.get("uris", "").split(),
                    st.get("suites", "").split(),
                )
    one_line = [apt_dir / "sources.list"]
    if sources_d.is_dir():
        one_line += sorted(sources_d.glob("*.list"))
    for path in one_line:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                line = re.sub(r"\[[^\]]*\]", " ", line)  # [arch=amd64 signed-by=...]
                parts = line.split()
                if len(parts) >= 3:
                    yield [parts[0]], [parts[1]], [parts[2]]


def host_debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str | None:
    """The Debian archive URI that the host's own apt configuration uses.

    Taken from the entry whose suite is a Debian release (not -security, not a
    third-party repository); ``$MODELCHECK_DEBIAN_MIRROR`` overrides it.
    """
    override = os.environ.get("MODELCHECK_DEBIAN_MIRROR")
    if override:
        return override.rstrip("/")
    for types, uris, suites in _sources_entries(apt_dir):
        if "deb" not in types or not any(_DEBIAN_SUITE.match(s) for s in suites):
            continue
        for uri in uris:
            if re.match(r"^(https?|ftp|file):", uri) and "security" not in uri:
                return uri.rstrip("/")
    return None


# --------------------------------------------------------------------- install


def _chroot_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "DEBIAN_FRONTEND": "noninteractive",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update({k: v for k, v in os.environ.items() if k.startswith(_PASS_ENV_PREFIXES)})
    if extra:
        env.update(extra)
    return env


def _in_root(root: Path, argv: list[str]) -> list[str]:
    """Command line running argv in the chroot, with /proc mounted privately.

    --kill-child: if unshare dies (see _guarded), so does the command.
    """
    return [
        "unshare",
        "--mount",
        "--fork",
        "--kill-child",
        f"--mount-proc={root / 'proc'}",
        "chroot",
        str(root),
        *argv,
    ]


def _guarded(argv: list[str]) -> list[str]:
    """Wrap argv so it dies with modelcheck and dumps no core.

    ``setpriv --pdeathsig KILL``: a modelcheck killed outright (Ctrl-C, kill, its own
    crash) must not leave a Caffe2 worker or apt-get running in the chroot with no
    timeout left to stop it; with unshare's --kill-child the chain goes down whole.
    ``prlimit --core=0``: a Caffe2 segfault leaves no core file behind.  Both are
    util-linux programs, like unshare, so no ``preexec_fn`` (unsafe with threads,
    and the smoke test calls run_onnx from one) is needed.
    """
    return ["setpriv", "--pdeathsig", "KILL", "--", "prlimit", "--core=0", "--", *argv]


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below path in this namespace (must be none before rm -r)."""
    prefix = str(path.resolve())
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [ln.split()[1] for ln in lines if len(ln.split()) > 1]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


class _Installer:
    """One install run: its log, its clock, and which steps are done (a resumed install skips those)."""

    def __init__(self, home: Path, progress: Callable[[str], None]) -> None:
        self.home = home
        self.root = home / ROOT_NAME
        self.log_path = home / "caffe2-install.log"
        self.wheel_cache = home / "caffe2-wheels"
        self.progress = progress
        self.t0 = time.monotonic()

    def say(self, msg: str) -> None:
        self.progress(f"[caffe2 {time.monotonic() - self.t0:5.0f}s] {msg}")

    def run(self, what: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        """Run a step's command, output to the install log; raise with its last line."""
        with self.log_path.open("a") as log:
            log.write(f"\n$ {' '.join(argv)}\n")
            log.flush()
            try:
                rc = subprocess.call(
                    _guarded(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
                )
            except OSError as exc:
                raise Caffe2InstallError(f"{what}: cannot start {argv[0]}: {exc}") from exc
        if rc != 0:
            raise Caffe2InstallError(f"{what} failed (exit {rc}): {self._last_log_line()} (log: {self.log_path})")

    def _last_log_line(self) -> str:
        try:
            lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "?"
        for ln in reversed(lines):
            if ln.startswith(("E:", "ERROR", "W: Failure", "unshare:", "chroot:")):
                return ln
        return lines[-1] if lines else "?"

    def step_done(self, name: str) -> bool:
        return (self.root / STEPS_DIR_IN_ROOT / name).exists()

    def mark_done(self, name: str) -> None:
        d = self.root / STEPS_DIR_IN_ROOT
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(f"{time.time():.0f}\n")


# -- preconditions: everything checked before the disk is touched


def _preconditions(inst: _Installer) -> tuple[str, str]:
    """Check everything we can before touching the disk; returns (debootstrap, mirror)."""
    _check_host()
    debootstrap = _which("debootstrap") or _install_debootstrap(inst)
    mirror = host_debian_mirror()
    if mirror is None:
        raise Caffe2InstallError(
            "no Debian archive found in /etc/apt/sources.list.d/*.sources or "
            "/etc/apt/sources.list (set MODELCHECK_DEBIAN_MIRROR to one)"
        )
    _check_archive(mirror)
    inst.home.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(inst.home).free
    if not inst.step_done("debootstrap") and free < 3 * 1024**3:
        raise Caffe2InstallError(f"need about 3 GB free under {inst.home}, have {free / 1024**3:.1f} GB")
    return debootstrap, mirror


def _check_host() -> None:
    """Linux on x86-64, root, and the util-linux tools the chroot runner uses."""
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        here = f"{platform.system()} {platform.machine()}"
        raise Caffe2InstallError(f"the Caffe2 runtime needs Linux on x86-64 (this is {here})")
    if os.geteuid() != 0:
        raise Caffe2InstallError("installing the Caffe2 runtime needs root (debootstrap and chroot)")
    for tool in ("unshare", "chroot", "setpriv", "prlimit"):
        if not _which(tool):
            raise Caffe2InstallError(f"`{tool}` not found (Debian: apt-get install util-linux coreutils)")


def _check_archive(mirror: str) -> None:
    """The archive must still carry bullseye: a one-line reason now beats a debootstrap failure later."""
    url = f"{mirror}/dists/{SUITE}/Release"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            resp.read(64)
    except urllib.error.HTTPError as exc:
        raise Caffe2InstallError(
            f"the Debian archive {mirror} has no {SUITE} ({url}: HTTP {exc.code}); "
            "set MODELCHECK_DEBIAN_MIRROR to an archive that still carries it"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Caffe2InstallError(f"Debian archive not reachable: {url}: {reason}") from exc


def _install_debootstrap(inst: _Installer) -> str:
    if not _which("apt-get"):
        raise Caffe2InstallError("`debootstrap` not found and no apt-get to install it")
    inst.say("installing debootstrap with apt-get")
    inst.home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        inst.run("apt-get install debootstrap", ["apt-get", "install", "-y", "debootstrap"], env)
    except Caffe2InstallError:
        inst.say("apt-get update (package lists missing or stale)")
        inst.run("apt-get update", ["apt-get", "update"], env)
        inst.run("apt-get install debootstrap", ["apt-get", "install", "-y", "debootstrap"], env)
    found = _which("debootstrap")
    if not found:
        raise Caffe2InstallError("apt-get installed debootstrap but it is not on PATH")
    return found


# -- the steps, each marked done in the root so an interrupted install resumes after it


def _build_root(inst: _Installer, debootstrap: str, mirror: str) -> None:
    """Every step not done yet: wheels, debootstrap, root configuration, apt, pip."""
    if not inst.step_done("wheels"):
        _download_wheels(inst)  # first: fails fast when PyPI is out of reach
    if inst.step_done("debootstrap"):
        inst.say("root file system already bootstrapped")
    else:
        _debootstrap(inst, debootstrap, mirror)
    _configure_root(inst.root)
    if inst.step_done("apt"):
        inst.say(f"{' '.join(APT_PACKAGES)} already installed in the chroot")
    else:
        _apt_install(inst)
    if inst.step_done("wheels"):
        inst.say("onnx wheels already installed in the chroot")
    else:
        _pip_install(inst)


def _download_wheels(inst: _Installer) -> None:
    """Host pip fetches CPython 3.9 wheels (the chroot has no CA setup of ours)."""
    inst.wheel_cache.mkdir(parents=True, exist_ok=True)
    argv = [*_host_pip(), "download", "--disable-pip-version-check", "--no-deps"]
    argv += ["--python-version", "3.9", "--implementation", "cp", "--abi", "cp39", "--only-binary=:all:"]
    for plat in WHEEL_PLATFORMS:
        argv += ["--platform", plat]
    argv += ["-d", str(inst.wheel_cache), *WHEELS]
    inst.say(f"downloading wheels for the chroot: {' '.join(WHEELS)}")
    inst.run("pip download", argv)


def _debootstrap(inst: _Installer, debootstrap: str, mirror: str) -> None:
    if inst.root.exists():
        mounts = _mounts_under(inst.root)
        if mounts:
            raise Caffe2InstallError(f"cannot redo {inst.root}: still mounted there: {', '.join(mounts)}")
        inst.say(f"removing unfinished root file system {inst.root}")
        shutil.rmtree(inst.root)
    inst.say(f"debootstrap --variant=minbase {SUITE} {inst.root} {mirror}")
    inst.run("debootstrap", [debootstrap, "--variant=minbase", SUITE, str(inst.root), mirror])
    inst.mark_done("debootstrap")


def _configure_root(root: Path) -> None:
    """DNS and apt settings the chroot needs (also redone on resume: cheap)."""
    resolv = root / "etc/resolv.conf"
    with contextlib.suppress(FileNotFoundError):
        resolv.unlink()
    with contextlib.suppress(OSError):
        shutil.copyfile("/etc/resolv.conf", resolv)
    conf = root / "etc/apt/apt.conf.d/99modelcheck"
    conf.write_text(
        "// written by modelcheck: the archive may be a dated snapshot of bullseye\n"
        'Acquire::Check-Valid-Until "false";\n'
        'APT::Install-Recommends "false";\n'
        'Acquire::Retries "3";\n'
    )


def _apt_install(inst: _Installer) -> None:
    env = _chroot_env()
    # A previous install killed inside dpkg leaves it half-configured: finish that first.
    inst.run("dpkg --configure -a in the chroot", _in_root(inst.root, ["dpkg", "--configure", "-a"]), env)
    inst.say("apt-get update (in the chroot)")
    inst.run("apt-get update in the chroot", _in_root(inst.root, ["apt-get", "update"]), env)
    inst.say(f"apt-get install {' '.join(APT_PACKAGES)} (in the chroot; the longest step)")
    argv = ["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES]
    inst.run("apt-get install in the chroot", _in_root(inst.root, argv), env)
    inst.run("apt-get clean in the chroot", _in_root(inst.root, ["apt-get", "clean"]), env)
    inst.mark_done("apt")


def _pip_install(inst: _Installer) -> None:
    dest = inst.root / WHEEL_DIR_IN_ROOT.lstrip("/")
    dest.mkdir(parents=True, exist_ok=True)
    for whl in inst.wheel_cache.glob("*.whl"):
        shutil.copy2(whl, dest / whl.name)
    inst.say("pip install the onnx wheels (in the chroot)")
    argv = ["python3", "-m", "pip", "install", "--no-index", "--no-deps", "--disable-pip-version-check"]
    argv += ["--find-links", WHEEL_DIR_IN_ROOT, *WHEELS]
    inst.run("pip install in the chroot", _in_root(inst.root, argv), _chroot_env())
    inst.mark_done("wheels")


def _versions(root: Path) -> dict[str, str]:
    """Versions of what matters: Debian's from dpkg-query in the root, the wheels' pins."""
    query = ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "python3-torch", "python3.9"]
    out = subprocess.run(_in_root(root, query), capture_output=True, text=True, env=_chroot_env()).stdout
    deb = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    torch_v = deb.get("python3-torch", "?").split("-")[0].split("+")[0]
    return {
        "torch": torch_v,
        "python3-torch": deb.get("python3-torch", "?"),
        "python": deb.get("python3.9", "?"),
        **{w.split("==")[0]: w.split("==")[1] for w in WHEELS if "==" in w},
    }


def _verify(inst: _Installer) -> tuple[float | None, float | None]:
    """Run a tiny conv model through the real runner; raise unless it matches."""
    inst.say("verifying: a one-conv ONNX model through Caffe2")
    ok, msg, run = _check_root(inst.root)
    if not ok:
        extra = f"; stderr: {run.stderr_tail.splitlines()[-1]}" if run and run.stderr_tail.strip() else ""
        raise Caffe2InstallError(f"verification failed: {msg}{extra}")
    inst.say(msg)
    return (run.convert_seconds, run.run_seconds) if run else (None, None)


def _host_pip() -> list[str]:
    """This interpreter's pip, else one on PATH (a uv-made venv may have no pip)."""
    import importlib.util

    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    raise Caffe2InstallError("no pip on the host to download the onnx wheels for the chroot")


def _which(tool: str) -> str | None:
    """shutil.which, also looking in the sbin directories a non-login PATH may lack."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(tool, path=path)


@contextlib.contextmanager
def _install_lock(home: Path) -> Iterator[None]:
    """Serialize installs into one home (two at once would fight over the root)."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".caffe2-install.lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise Caffe2InstallError(f"another Caffe2 install into {home} is running") from exc
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def install_runtime(home: Path | None = None, progress: Callable[[str], None] = print) -> RuntimeStatus:
    """Install the bullseye Caffe2 runtime under home; idempotent and resumable.

    Raises Caffe2InstallError with a one-line reason when it cannot be done here.
    """
    home = home if home is not None else default_home()
    status = runtime_status(home)
    if status.installed:
        progress(f"[caffe2] {status.version} already installed at {_root(home)}")
        return status
    inst = _Installer(home, progress)
    debootstrap, mirror = _preconditions(inst)
    with _install_lock(home):
        # The marker goes first, so an interrupted reinstall never looks complete.
        with contextlib.suppress(FileNotFoundError):
            (inst.root / MARKER_NAME).unlink()
        _build_root(inst, debootstrap, mirror)
        versions = _versions(inst.root)
        convert_s, run_s = _verify(inst)
        marker = {
            "format": MARKER_FORMAT,
            "suite": SUITE,
            "mirror": mirror,
            **versions,
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "install_seconds": round(time.monotonic() - inst.t0, 1),
            "verify_convert_seconds": convert_s,
            "verify_run_seconds": run_s,
        }
        write_json(inst.root / MARKER_NAME, marker)
    status = runtime_status(home)
    inst.say(f"done: {status.version} at {inst.root}")
    return status


# ------------------------------------------------------------------------ run


def _tail(text: str, lines: int = _STDERR_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


# Noise in the worker's output: glog lines ("W1128 07:40:17.313 123 init.h:137] ..."),
# Caffe2's CUDA/HIP notice, stack frames.
_NOISE = re.compile(r"^([IWE]\d{4} |WARNING|Warning|frame #|File \"|@ |\*\*\* )")


def _last_meaningful(text: str) -> str:
    for ln in reversed(text.strip().splitlines()):
        ln = ln.strip()
        if ln and not _NOISE.match(ln):
            return ln
    return ""


def _skipped(detail: str) -> Caffe2Run:
    return Caffe2Run("skipped", None, None, None, detail, "convert", "", None)


def run_onnx(
    onnx_path: Path,
    inputs: dict[str, numpy.ndarray],
    out_dir: Path | None,
    timeout: float,
    home: Path | None = None,
) -> Caffe2Run:
    """Convert an ONNX model to Caffe2 nets and run them in a crash-proof child.

    Never raises on model problems: they come back as "failed" (Python error),
    "crashed" (killed by a signal) or "timeout".  When out_dir is given and the
    conversion succeeded, ``init_net.pb`` and ``predict_net.pb`` are moved there
    (even if the run then failed: they are what an app would load).
    """
    status = runtime_status(home)
    if not status.installed:
        return _skipped(status.reason or NOT_INSTALLED)
    if os.geteuid() != 0:
        return _skipped("the Caffe2 runtime runs in a chroot and needs root")
    return _run_in_root(_root(home), Path(onnx_path), inputs, out_dir, timeout)


def _job_prefix() -> str:
    """Job dirs are named mc-<host pid>-XXXX: whose they are, and whether it still lives."""
    return f"mc-{os.getpid()}-"


def _remove_stale_jobs(tmp: Path, max_age: float = 24 * 3600) -> None:
    """Sweep job dirs left by a modelcheck that was killed outright (SIGKILL)."""
    now = time.time()
    with contextlib.suppress(OSError):
        for job in tmp.glob("mc-*"):
            pid = job.name.split("-")[1] if job.name.count("-") >= 2 else ""
            try:
                if pid.isdigit():
                    os.kill(int(pid), 0)  # raises if that process is gone
                    continue
                if now - job.stat().st_mtime <= max_age:
                    continue
            except ProcessLookupError:
                pass
            except OSError:  # PermissionError: alive, someone else's
                continue
            shutil.rmtree(job, ignore_errors=True)


def _run_in_root(
    root: Path,
    onnx_path: Path,
    inputs: Mapping[str, Any],
    out_dir: Path | None,
    timeout: float,
    extra_env: Mapping[str, str] | None = None,
) -> Caffe2Run:
    """The runner proper, for an installed or being-installed root."""
    _remove_stale_jobs(root / "tmp")
    try:
        job = Path(tempfile.mkdtemp(prefix=_job_prefix(), dir=root / "tmp"))
    except OSError as exc:
        return _skipped(f"Caffe2 runtime at {root} is not usable: {exc}")
    try:
        unreadable = _write_job(job, onnx_path, inputs)
        if unreadable is not None:
            return unreadable
        job_in_root = "/" + str(job.relative_to(root))
        env = _chroot_env({"LD_PRELOAD": _LIBGCC_S, **(extra_env or {})})
        argv = _in_root(root, ["/usr/bin/python3", "-I", f"{job_in_root}/caffe2_job.py", job_in_root])
        rc, timed_out, output = _run_child(argv, env, timeout, job)
        if out_dir is not None:
            _keep_nets(job, Path(out_dir))
        return _job_result(job, rc, timed_out, output, timeout)
    finally:
        shutil.rmtree(job, ignore_errors=True)


def _write_job(job: Path, onnx_path: Path, inputs: Mapping[str, Any]) -> Caffe2Run | None:
    """The model, one ``.npy`` per input, ``job.json`` and the worker into the job dir; a failed
    run when the model or an input cannot be written."""
    import numpy as np

    try:
        shutil.copyfile(onnx_path, job / "model.onnx")
    except OSError as exc:
        return Caffe2Run("failed", None, None, None, f"cannot read {onnx_path}: {exc}", "convert", "", None)
    items = []
    for i, (name, value) in enumerate(inputs.items()):
        fname = f"in_{i}.npy"
        try:
            np.save(job / fname, np.ascontiguousarray(np.asarray(value)), allow_pickle=False)
        except (OSError, ValueError, TypeError) as exc:
            detail = f"cannot pass input {name!r} to Caffe2: {exc}"
            return Caffe2Run("failed", None, None, None, detail, "run", "", None)
        items.append({"name": name, "file": fname})
    (job / "job.json").write_text(json.dumps({"model": "model.onnx", "inputs": items}))
    shutil.copyfile(Path(__file__).with_name("job.py"), job / "caffe2_job.py")
    os.chmod(job, 0o755)
    return None


def _keep_nets(job: Path, out_dir: Path) -> None:
    """Move ``init_net.pb`` and ``predict_net.pb`` out of the job dir when the conversion made both."""
    nets = [job / "init_net.pb", job / "predict_net.pb"]
    if all(p.exists() for p in nets):
        out_dir.mkdir(parents=True, exist_ok=True)
        for p in nets:
            shutil.move(str(p), out_dir / p.name)


def _job_result(job: Path, rc: int, timed_out: bool, output: str, timeout: float) -> Caffe2Run:
    """How the worker ended, from its exit, its output and the ``stage``/``result.json`` it left."""
    import numpy as np

    # "<stage> <step>", e.g. "run RunNetOnce(predict_net)", written by the worker.
    stage_file = job / "stage"
    stage, _, step = (stage_file.read_text().strip() if stage_file.exists() else "").partition(" ")
    stage = stage if stage in ("convert", "run") else "convert"
    where = f"{stage} ({step})" if step else stage
    stderr_tail = _tail(output)
    if timed_out:
        detail = f"no result within {timeout:g} s; killed during {where}"
        return Caffe2Run("timeout", None, None, None, detail, stage, stderr_tail, None)
    if rc < 0:
        detail = f"Caffe2 worker killed by {signal_name(-rc)} during {where}"
        return Caffe2Run("crashed", None, None, None, detail, stage, stderr_tail, -rc)
    result = read_json(job / "result.json")
    if not result:
        detail = _last_meaningful(output) or f"Caffe2 worker exited with code {rc} and no result"
        return Caffe2Run("failed", None, None, None, detail, stage, stderr_tail, None)
    passed = result.get("status") == "passed"
    outputs = [np.load(job / name, allow_pickle=False) for name in result.get("outputs", [])] if passed else None
    detail = "; ".join(result["notes"]) if passed and result.get("notes") else result.get("detail") or ""
    return Caffe2Run("passed" if passed else "failed", outputs, result.get("convert_seconds"),
                     result.get("run_seconds"), detail, result.get("stage") or stage, stderr_tail, None)


def _run_child(argv: list[str], env: Mapping[str, str], timeout: float, job: Path) -> tuple[int, bool, str]:
    """Run argv in its own process group; kill the whole group on timeout.

    Returns (returncode, timed_out, output).  stdout and stderr go to one file,
    not pipes, so a chatty child never blocks on a full pipe and the tail keeps
    Caffe2's log lines and Python's traceback in the order they were written.
    """
    log_path = job / "output.txt"
    with log_path.open("wb") as log:
        try:
            proc = subprocess.Popen(
                _guarded(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,
            )
        except OSError as exc:
            return 127, False, f"cannot start {argv[0]}: {exc}"
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    return proc.returncode, timed_out, log_path.read_bytes().decode("utf-8", "replace")


# ----------------------------------------------------------------------- check


def _conv_model(seed: int = 0) -> tuple[bytes, dict[str, Any], Any]:
    """A one-conv ONNX model (opset 9), an input for it, and numpy's answer."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node],
        "modelcheck_conv",
        # Initializers listed as inputs too, as the exporter's keep_initializers_as_inputs does.
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, w.shape),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, b.shape),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 4, 8, 8))],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 4  # what opset 9 was released with; the chroot's onnx 1.10 knows it
    onnx.checker.check_model(model)

    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))
    expected = np.einsum("nchwij,ocij->nohw", win, w.astype(np.float64)) + b[None, :, None, None]
    return model.SerializeToString(), {"x": x}, expected


def _check_root(root: Path, timeout: float = 120.0) -> tuple[bool, str, Caffe2Run | None]:
    import numpy as np

    model, inputs, expected = _conv_model()
    with tempfile.TemporaryDirectory(prefix="modelcheck-") as tmp:
        path = Path(tmp) / "conv.onnx"
        path.write_bytes(model)
        run = _run_in_root(root, path, inputs, None, timeout)
    if run.status != "passed" or not run.outputs:
        return False, f"one-conv model {run.status} at {run.stage}: {run.detail}", run
    got = run.outputs[0]
    if got.shape != expected.shape:
        return False, f"one-conv model: shape {got.shape}, expected {expected.shape}", run
    diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
    if not diff <= 1e-4:
        return False, f"one-conv model: max abs diff {diff:.2e} to numpy (> 1e-4)", run
    return (
        True,
        f"one-conv model converted in {run.convert_seconds or 0:.2f} s, "
        f"ran in {run.run_seconds or 0:.3f} s, max abs diff to numpy {diff:.1e}",
        run,
    )


def check_runtime(home: Path | None = None) -> tuple[bool, str]:
    """For `modelcheck --doctor`: does the installed runtime compute a conv right?"""
    status = runtime_status(home)
    if not status.installed:
        return False, status.reason or NOT_INSTALLED
    if os.geteuid() != 0:
        return False, "the Caffe2 runtime runs in a chroot and needs root"
    ok, msg, _ = _check_root(_root(home))
    return ok, f"{status.version}: {msg}"

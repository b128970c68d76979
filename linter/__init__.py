"""modelcheck: will this PyTorch model survive export to ONNX and Caffe2?

The package root must stay light: the pre-commit path (``--static-only``) imports it and
must never pay for torch.
"""

__version__ = "0.1.0"

#: folders never walked into: version control, environments, caches, build output
SKIP_DIRS = frozenset({".git", ".hg", ".svn", ".venv", "venv", "__pycache__", ".tox", ".nox",
                        ".mypy_cache", ".ruff_cache", ".pytest_cache", "node_modules", ".modelcheck",
                        "build", "dist", ".eggs"})



def own_code_dirs() -> tuple[str, ...]:
    """The folders of modelcheck's own code (the package, its rules and fixers), resolved.

    A frame or file under one of them is never the user's: tracebacks, call sites and
    construction sites skip it. Found without importing rules/fixers (libcst stays unloaded).
    """
    import importlib.util
    import os

    dirs = []
    for name in (__name__, f"{__name__}.rules", f"{__name__}.fixers"):
        spec = importlib.util.find_spec(name)
        dirs += [os.path.realpath(d) for d in (spec.submodule_search_locations or [])] if spec else []
    return tuple(dirs)

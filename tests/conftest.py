"""Shared fixtures. Tests run real PyMC sampling; the compile caches (PyTensor's, JAX's, emvsbayes's
exported samplers) are private to the checkout (bin/test sets PYTENSOR_FLAGS, JAX_COMPILATION_CACHE_DIR
and EMVSBAYES_PROGRAM_CACHE_DIR) and warm after the first test that compiles a model."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PYTENSOR_FLAGS", f"base_compiledir={ROOT / '.cache' / 'pytensor'}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".cache" / "jax"))
os.environ.setdefault("EMVSBAYES_PROGRAM_CACHE_DIR", str(ROOT / ".cache" / "programs"))


def _user_env() -> dict:
    """The environment a user's shell gives: warnings as they come (no PYTHONWARNINGS from the test runner),
    so a test sees every warning and traceback line a user would see."""
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    return env


def run_cli(*args, cwd=None, timeout=600, env=None):
    """Run the installed command line as a user would; returns the CompletedProcess. ``env`` adds variables."""
    return subprocess.run([sys.executable, "-m", "emvsbayes", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout, env={**_user_env(), **(env or {})})


@pytest.fixture(scope="session")
def lecture_run(tmp_path_factory):
    """The lecture spec run once end to end through the CLI; tests read its outputs."""
    out = tmp_path_factory.mktemp("lecture")
    proc = run_cli("run", ROOT / "models" / "lecture_coins.toml", "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out

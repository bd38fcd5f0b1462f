"""DESIGN.md section 1: the import arrows point one way. A wrong import fails here."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("import-linter is a test dependency: pip install -e '.[test]'")
    result = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_stack_package_init_imports_nothing_of_ours():
    tree = ast.parse((ROOT / "stack" / "__init__.py").read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert imports == [], "stack/__init__.py must stay import-free (DESIGN.md section 1)"


def test_layer_checker_catches_a_wrong_arrow(tmp_path):
    """The contract is live: a bottom-layer module importing the CLI is reported."""
    copy = tmp_path / "tree"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", "tests", "*.egg-info"))
    clock = copy / "stack" / "base" / "clock.py"
    clock.write_text(clock.read_text() + "\nimport stack.cli  # wrong arrow\n")
    lint = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    result = subprocess.run([sys.executable, "-c", lint, "--no-cache"],
                            cwd=copy, capture_output=True, text=True,
                            env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "stack.base.clock" in result.stdout

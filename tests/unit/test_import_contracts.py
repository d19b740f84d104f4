"""The import contracts in pyproject.toml (`make lint` runs them) hold for the tree, and they can
fail: a copy of the packages with one deliberate violation per contract is refused, naming it."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("shared", "services", "tools", "bench", "tests")
LINT_IMPORTS = os.path.join(os.path.dirname(sys.executable), "lint-imports")

# (module added to the copy, its import, the contract that must refuse it)
VIOLATIONS = [
    ("shared/reaches_up.py", "import services.grid.models", "shared-is-plumbing"),
    ("shared/uses_a_tool.py", "from tools import demo_data", "shared-is-plumbing"),
    ("services/grid/uses_a_tool.py", "import tools.cli", "services-are-deployable"),
    ("services/volunteer/peeks.py", "from services.grid import models", "services-meet-through-clients"),
    ("tools/uses_a_test.py", "import tests.support", "tools-are-not-runtime"),
]


def lint_imports(root, *contracts):
    args = [LINT_IMPORTS, "--no-logo", "--no-cache"] + [f"--contract={c}" for c in contracts]
    return subprocess.run(
        args, cwd=root, env={**os.environ, "PYTHONPATH": root}, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory):
    """The packages' Python files and the contracts, without caches or anything else."""
    root = tmp_path_factory.mktemp("layers")
    for package in PACKAGES:
        shutil.copytree(
            os.path.join(ROOT, package),
            root / package,
            ignore=lambda folder, names: [
                n for n in names if not n.endswith(".py") and not os.path.isdir(os.path.join(folder, n))
            ],
        )
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), root / "pyproject.toml")
    return root


def test_the_tree_keeps_every_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("path", "statement", "contract"), VIOLATIONS, ids=[v[2] + ":" + v[0] for v in VIOLATIONS])
def test_a_deliberate_violation_breaks_its_contract(tree_copy, path, statement, contract):
    target = tree_copy / path
    target.write_text(statement + "\n")
    try:
        result = lint_imports(str(tree_copy), contract)
    finally:
        target.unlink()
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
    offender = path.removesuffix(".py").replace("/", ".")
    assert offender in result.stdout, result.stdout

"""No dependency noise reaches users: nameko 2.x pulls in eventlet and pkg_resources, which both
warn on import. Importing any part of `shared` first (as callers' scripts, the CLI and the service
runner do) keeps those warnings out of their output; other warnings still show."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_python(code, **env):
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": ROOT, **env},
    )


def test_a_callers_script_importing_the_suite_first_prints_nothing():
    result = run_python(
        "import shared.errors\nfrom nameko.standalone.rpc import ClusterRpcProxy\nimport nameko.cli.main\n"
    )
    assert result.returncode == 0 and result.stderr == "" and result.stdout == ""


def test_without_the_suite_first_nameko_is_noisy_so_the_check_above_can_fail():
    result = run_python("from nameko.standalone.rpc import ClusterRpcProxy\n")
    assert "Eventlet is deprecated" in result.stderr


def test_other_warnings_are_not_silenced():
    result = run_python("import shared.errors, warnings\nwarnings.warn('ours', UserWarning)\n")
    assert "UserWarning: ours" in result.stderr


def test_the_cli_prints_only_its_answer():
    result = subprocess.run(
        [sys.executable, "-m", "tools.cli", "token", "--sub", "alice", "--role", "admin"],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": ROOT, "GRASSROOTS_JWT_SECRET": "a-secret-for-this-test"},
    )
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.count(".") == 2 and len(result.stdout.splitlines()) == 1  # one JWT

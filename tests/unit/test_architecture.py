"""The design rules the import contracts cannot see (docs/architecture.md): the entrypoint owns the
transaction, every RPC method declares its reply, replies are not built by hand, and shared/ does
not reach the services by name either."""

import ast
import pathlib

import pytest

from tools import asyncapi

ROOT = pathlib.Path(__file__).resolve().parents[2]
SERVICE_DIRS = sorted(p for p in (ROOT / "services").iterdir() if (p / "service.py").exists())
TRANSACTION_CALLS = {"commit", "rollback"}


def parsed(path):
    return ast.parse(path.read_text(), filename=str(path))


def calls_named(tree, names):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names:
            yield node


def domain_modules():
    """Every module of a service that is not its entrypoints (service.py) or its migrations."""
    for service in SERVICE_DIRS:
        for path in sorted(service.rglob("*.py")):
            if path.name != "service.py" and "migrations" not in path.parts:
                yield path


def test_domain_code_never_commits_or_rolls_back():
    found = [
        f"{path.relative_to(ROOT)}:{call.lineno} .{call.func.attr}()"
        for path in domain_modules()
        for call in calls_named(parsed(path), TRANSACTION_CALLS)
    ]
    assert found == []


def test_the_transaction_check_can_fail(tmp_path):
    planted = tmp_path / "care.py"
    planted.write_text("def open_due(uow):\n    uow.session.add(1)\n    uow.commit()\n")
    assert [c.func.attr for c in calls_named(parsed(planted), TRANSACTION_CALLS)] == ["commit"]


@pytest.fixture(scope="module")
def rpc_contracts():
    return [
        (service, method, contract)
        for service, cls in asyncapi.service_classes().items()
        for method, contract in asyncapi.entrypoints(cls)[0]
    ]


def test_every_rpc_method_declares_its_reply(rpc_contracts):
    assert len(rpc_contracts) > 70
    assert [f"{s}.{m}" for s, m, contract in rpc_contracts if contract.get("returns") is None] == []


def _endpoint_methods(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any(
            isinstance(d, ast.Call) and getattr(d.func, "id", None) == "endpoint" for d in node.decorator_list
        ):
            yield node


def hand_built(tree):
    """What an endpoint method does to build its reply itself: ``.dump()`` calls, dict and list literals
    returned."""
    for method in _endpoint_methods(tree):
        for call in calls_named(method, {"dump"}):
            yield f"{method.name}:{call.lineno} .dump()"
        for node in ast.walk(method):
            if isinstance(node, ast.Return) and isinstance(node.value, (ast.Dict, ast.List, ast.ListComp)):
                yield f"{method.name}:{node.lineno} returns a {type(node.value).__name__} literal"


def test_no_endpoint_builds_its_reply_by_hand():
    found = [f"{d.name}/service.py {where}" for d in SERVICE_DIRS for where in hand_built(parsed(d / "service.py"))]
    assert found == []


def test_the_hand_built_check_can_fail(tmp_path):
    planted = tmp_path / "service.py"
    planted.write_text(
        "@rpc\n@endpoint(roles=R, returns=X)\ndef get(self, caller, unit_id):\n"
        "    return {'unit': schemas.UNIT.dump(units.get(unit_id))}\n"
    )
    assert sorted(hand_built(parsed(planted))) == ["get:4 .dump()", "get:4 returns a Dict literal"]


def test_shared_names_no_service_or_tool_module():
    """import-linter sees import statements; this sees module names in strings (importlib)."""
    found = []
    for path in sorted((ROOT / "shared").rglob("*.py")):
        tree = parsed(path)
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and node.value.startswith(("services.", "tools.", "bench.", "tests."))
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert found == []

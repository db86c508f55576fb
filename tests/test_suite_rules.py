"""A rule the test suite keeps about itself: every test asserts something (a test that cannot fail
proves nothing). Checked on the source: an ``assert``, ``pytest.raises``/``warns``/``fail`` or a
numpy/torch ``assert_*`` call in the test or in a module-level helper it calls directly."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
CHECKS = {
    "raises",
    "warns",
    "fail",
    "deprecated_call",
    "assert_close",
    "assert_array_equal",
    "assert_allclose",
    "assert_equal",
    "assert_array_almost_equal",
}


def _checks_something(node: ast.AST) -> bool:
    for child in ast.walk(node):
        if isinstance(child, ast.Assert):
            return True
        if isinstance(child, ast.Call):
            func = child.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in CHECKS:
                return True
    return False


def unchecked_tests(source: str) -> list[str]:
    """Names of the test functions in ``source`` that check nothing."""
    tree = ast.parse(source)
    helpers = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("test")}
    bare = []
    for node in tree.body:
        if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test")) or _checks_something(node):
            continue
        called = {c.func.id for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
        if not any(_checks_something(helpers[name]) for name in called & helpers.keys()):
            bare.append(node.name)
    return bare


def test_the_rule_finds_a_test_that_checks_nothing() -> None:
    source = (
        "def _helper(x):\n    return x\n\n\ndef _check(x):\n    assert x\n\n\n"
        "def test_runs_only():\n    _helper(1)\n\n\ndef test_via_helper():\n    _check(_helper(1))\n\n\n"
        "def test_raises():\n    with pytest.raises(ValueError):\n        int('x')\n"
    )
    assert unchecked_tests(source) == ["test_runs_only"]


def test_every_test_asserts_something() -> None:
    bare = [
        f"{path.relative_to(TESTS)}::{name}"
        for path in sorted(TESTS.rglob("test_*.py"))
        for name in unchecked_tests(path.read_text())
    ]
    assert bare == [], f"tests that cannot fail: {bare}"

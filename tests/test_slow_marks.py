"""tests/conftest.py names the slow tests (and costly fixtures) by file and function: every name must
still exist, or `make test-fast` would quietly start running a slow test that was renamed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import EVERY_TEST, SLOW

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("filename", sorted(SLOW))
def test_slow_names_exist(filename: str):
    path = TESTS / filename
    assert path.is_file(), f"tests/conftest.py marks tests in {filename}, which does not exist"
    if SLOW[filename] is EVERY_TEST:
        return
    defined = {
        node.name for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(node, ast.FunctionDef)
    }
    missing = sorted(SLOW[filename] - defined)
    assert not missing, f"tests/conftest.py marks {', '.join(missing)} in {filename} as slow: no such test"

"""Every `unf` example in docs/language.md compiles, and the README's commands exist."""

import re
from pathlib import Path

import pytest

from unfoldgen.compiler import compile_text

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"```unf\n(.*?)```", (ROOT / "docs" / "language.md").read_text(), flags=re.S)


def test_the_reference_has_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_language_reference_example_compiles(index):
    compiled = compile_text(BLOCKS[index], f"docs/language.md#{index}")
    assert any(path.endswith("/model.py") for path in compiled.files)


def test_readme_names_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme

"""The README's models table is generated from the registry; keep it true."""

import pathlib
import re

import pytest

import zoo
from zoo.cli import format_models_table

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- models:start -->\n(.*?)\n<!-- models:end -->", re.S)


@pytest.mark.slow
def test_readme_models_table_matches_registry():
    match = BLOCK.search(README.read_text())
    assert match, "README.md lacks the <!-- models:start --> ... <!-- models:end --> block"
    expected = format_models_table(zoo.list_models(), markdown=True)
    assert match.group(1) == expected, (
        "README models table is stale: regenerate it with `zoo models --markdown`")


def test_readme_shows_the_two_quick_start_commands():
    text = README.read_text()
    assert "make train" in text and "make test" in text

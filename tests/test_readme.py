"""The README's models table is generated from the registry; keep it true."""

import pathlib
import re

import pytest

import zoo
from zoo.cli import format_models_table

from tests.models.helpers import model_group

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- models:start -->\n(.*?)\n<!-- models:end -->", re.S)


def _readme_rows() -> list[str]:
    match = BLOCK.search(README.read_text())
    assert match, "README.md lacks the <!-- models:start --> ... <!-- models:end --> block"
    return match.group(1).splitlines()


def test_readme_models_table_lists_every_model_in_registry_order():
    header = format_models_table([], markdown=True).splitlines()
    rows = _readme_rows()
    assert rows[:2] == header
    names = [row.split("|")[1].strip() for row in rows[2:]]
    assert names == zoo.list_models(), (
        "README models table is stale: regenerate it with tools/update_readme_models.py")


# One row per test (counting MACs traces the model at full resolution), in the
# model's xdist group so the trace overlaps with nothing else of that model.
@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=model_group(n)) for n in zoo.list_models()])
def test_readme_models_row_matches_registry(name):
    expected = format_models_table([name], markdown=True).splitlines()[-1]
    assert expected in _readme_rows(), (
        f"README row of {name} is stale: regenerate it with tools/update_readme_models.py")


def test_readme_shows_the_two_quick_start_commands():
    text = README.read_text()
    assert "make train" in text and "make test" in text

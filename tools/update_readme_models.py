"""Regenerates the models table in README.md from the registry.

    .venv/bin/python tools/update_readme_models.py

tests/test_readme.py fails when the table and the registry disagree.
"""

import pathlib
import re

import zoo
from zoo.cli import format_models_table

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- models:start -->\n).*?\n?(<!-- models:end -->)", re.S)


def main() -> None:
    text = README.read_text()
    if not BLOCK.search(text):
        raise SystemExit("README.md lacks the <!-- models:start --> ... <!-- models:end --> block")
    table = format_models_table(zoo.list_models(), markdown=True)
    README.write_text(BLOCK.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text))
    print(f"README.md: {len(zoo.list_models())} models")


if __name__ == "__main__":
    main()

"""The test suite's sharing of compiled passes needs pytest-xdist's groups.

`make test` runs `pytest -n auto --dist loadgroup`, and the tests of one
model carry `xdist_group("model-<name>")` (tests/models/helpers.py) so that
they run in one worker, where the jitted eval pass is compiled once for the
registry tests and the parity tests. Some pytest / pytest-xdist pairs (pytest
9.2 with xdist 3.8: pytest-dev/pytest-xdist#1386) silently ignore the groups;
nothing fails, the suite just compiles more. This test runs a small suite in
a subprocess the way `make test` does and fails if a group was split.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import textwrap
from pathlib import Path

GROUPED_TESTS = textwrap.dedent("""
    import os
    import pathlib

    import pytest

    def _record(group, index):
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        path = pathlib.Path(os.environ["GROUPS_OUT"]) / f"{group}-{index}"
        path.write_text(worker)

    CASES = [pytest.param(g, i, marks=pytest.mark.xdist_group(f"group{g}"))
             for g in range(2) for i in range(4)]

    @pytest.mark.parametrize("group, index", CASES)
    def test_first_file_style(group, index):
        _record(group, f"a{index}")

    @pytest.mark.parametrize("group, index", CASES)
    def test_second_file_style(group, index):
        _record(group, f"b{index}")
""")


def test_xdist_loadgroup_keeps_each_group_on_one_worker(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    # Its own rootdir and ini: the generated suite does not load Zoo's conftest.
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "test_grouped.py").write_text(GROUPED_TESTS)
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q",
         "-p", "no:cacheprovider", str(suite)],
        cwd=suite, capture_output=True, text=True, timeout=300,
        env={**_environment(), "GROUPS_OUT": str(out)})
    assert result.returncode == 0, result.stdout + result.stderr
    records = list(out.iterdir())
    assert len(records) == 16, "every generated test ran"
    workers = collections.defaultdict(set)
    for record in records:
        workers[record.name.split("-")[0]].add(record.read_text())
    assert set(workers) == {"0", "1"}
    split = {group: sorted(names) for group, names in workers.items() if len(names) != 1}
    assert not split, (f"--dist loadgroup ran one xdist_group on several workers: {split}; "
                       f"this pytest / pytest-xdist pair ignores the groups (see the pin "
                       f"in pyproject.toml's dev extra)")


def _environment() -> dict[str, str]:
    # PYTEST_ADDOPTS or a worker's variables from this run must not leak in.
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PYTEST_", "XDIST_"))}

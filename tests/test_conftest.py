"""tests/conftest.py leaves nothing behind: the compilation cache it makes for a
test run is removed when the process that made it exits, and one it inherited
(from the user or a parent test process) is left alone."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

_CONFTEST = pathlib.Path(__file__).with_name("conftest.py")

# Runs conftest.py as pytest would (import time), writes a file into the cache
# directory it chose, as fit() would, and prints that directory.
_PROBE = """
import os, pathlib, runpy, sys
runpy.run_path(sys.argv[1])
directory = pathlib.Path(os.environ["ZOO_COMPILATION_CACHE"])
(directory / "entry").write_bytes(b"compiled program")
print(directory)
"""


def _run_probe(env: dict[str, str]) -> pathlib.Path:
    result = subprocess.run([sys.executable, "-c", _PROBE, str(_CONFTEST)], env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    return pathlib.Path(result.stdout.strip())


def test_own_compilation_cache_is_removed_at_exit():
    env = {key: value for key, value in os.environ.items() if key != "ZOO_COMPILATION_CACHE"}
    directory = _run_probe(env)
    assert directory.name.startswith("zoo-test-jax-cache-")
    assert not directory.exists(), f"{directory} was left behind"


def test_inherited_compilation_cache_is_kept(tmp_path):
    env = {**os.environ, "ZOO_COMPILATION_CACHE": str(tmp_path)}
    directory = _run_probe(env)
    assert directory == tmp_path
    assert (tmp_path / "entry").read_bytes() == b"compiled program"

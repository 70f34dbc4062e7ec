"""Benchmark suites: named, typed lists of sweeps (the standard ones live in
`benchmarks/suites.py` of the repository).

    Suite("quick", "a few small models", sweeps=(
        Sweep(models=("simple_cnn",), batch_sizes=(8,), modes=("infer", "train")),
    ))
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

from zoo.bench.runner import BenchConfig, expand_configs

# The repository's standard suites (an editable install keeps this path).
STANDARD_SUITES_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "suites.py"


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Every combination of these values (see `zoo.bench.runner.expand_configs`).

    image_sizes: None stands for the model's registered input size.
    """

    models: tuple[str, ...]
    batch_sizes: tuple[int, ...] = (1,)
    image_sizes: tuple[int | None, ...] = (None,)
    dtypes: tuple[str, ...] = ("float32",)
    modes: tuple[str, ...] = ("infer",)
    parallel: tuple[str, ...] = ("single",)
    warmup: int = 5
    steps: int = 30


@dataclasses.dataclass(frozen=True)
class Suite:
    """A named benchmark: what it is for, and its sweeps run in order."""

    name: str
    description: str
    sweeps: tuple[Sweep, ...]

    def configs(self, *, num_devices: int | None = None) -> list[BenchConfig]:
        """All configurations of all sweeps, validated before anything runs."""
        configs: list[BenchConfig] = []
        for sweep in self.sweeps:
            fields = dataclasses.asdict(sweep)
            configs += expand_configs(fields.pop("models"), num_devices=num_devices, **fields)
        return configs


def load_suites(path: Path = STANDARD_SUITES_FILE) -> dict[str, Suite]:
    """The `SUITES` dict (name -> Suite) of the Python file at `path`."""
    if not path.is_file():
        raise ValueError(f"suites file {str(path)!r} does not exist; pass --suites-file")
    spec = importlib.util.spec_from_file_location("zoo_bench_suites_file", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    suites = getattr(module, "SUITES", None)
    if not isinstance(suites, dict) or not all(isinstance(s, Suite) for s in suites.values()):
        raise ValueError(f"{path} must define SUITES: dict[str, zoo.bench.suites.Suite]")
    return suites


def get_suite(name: str, path: Path = STANDARD_SUITES_FILE) -> Suite:
    """The suite called `name` in `path`; unknown names list the available ones."""
    suites = load_suites(path)
    if name not in suites:
        raise ValueError(f"unknown suite {name!r}; {path.name} defines {', '.join(sorted(suites))}")
    return suites[name]

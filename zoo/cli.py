"""The `zoo` command: a thin layer over the importable library.

    zoo models [PATTERN]          table of registered models
    zoo train / zoo eval ...      (zoo/train/cli.py)
    zoo bench ...                 (zoo/bench/cli.py)

Each sub-command module defines `register(subparsers)`, which adds its parsers
with `set_defaults(run=function)`; the function takes the parsed arguments and
returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that add sub-commands besides `models`.
COMMAND_MODULES: tuple[str, ...] = ("zoo.bench.cli", "zoo.train.cli", "zoo.interop.cli")


def format_count(value: int) -> str:
    """12_345_678 -> '12.35 M' (G, M or K, whichever keeps 1-999 before the point)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return str(value)


def format_models_table(names: Sequence[str], *, markdown: bool = False) -> str:
    """A table of name, family, params, MACs and input size for `names`."""
    from zoo.registry import model_info

    header = ("model", "family", "params", "MACs", "input")
    rows = []
    for name in names:
        info = model_info(name)
        size = info["input_size"]
        rows.append((name, info["family"], f"{info['params']:,}",
                     format_count(info["macs"]), f"{size}x{size}x{info['in_channels']}"))
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*r) for r in [header, *rows])


def _run_models(args: argparse.Namespace) -> int:
    from zoo.registry import list_models

    names = list_models(args.pattern, include_test_only=args.all)
    if not names:
        print(f"no registered model matches {args.pattern!r}", file=sys.stderr)
        return 1
    print(format_models_table(names, markdown=args.markdown))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__.split("\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    models = subparsers.add_parser("models", help="list registered models")
    models.add_argument("pattern", nargs="?", default="*", help="glob, e.g. 'resnet*'")
    models.add_argument("--markdown", action="store_true", help="print a Markdown table")
    models.add_argument("--all", action="store_true", help="include test-only variants")
    models.set_defaults(run=_run_models)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


def entrypoint() -> None:
    """The installed `zoo` script: process settings first (zoo.runtime), then `main`."""
    from zoo.runtime import keep_freed_host_memory

    keep_freed_host_memory()     # before JAX starts its threads
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()

"""`zoo convert` and `zoo export`.

    zoo convert --from torchvision --model resnet50 --weights resnet50.pth --out weights/r50
    zoo convert --from timm --model vit_tiny_patch16_224 --weights model.safetensors --out w/vit
    zoo export --checkpoint weights/r50 --out served/r50          # symbolic batch
    zoo export --workdir runs/a --format savedmodel --preprocess --out served/a
    zoo export --workdir runs/a --batch-size 8 --out served/a8     # fixed batch
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import sys
from pathlib import Path
from typing import Any


def _parse_overrides(items: list[str] | None) -> dict[str, Any]:
    overrides = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[key] = text
    return overrides


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _run_convert(args: argparse.Namespace) -> int:
    from zoo.interop.mapping import load_state_dict
    from zoo.interop.pretrained import save_variables
    from zoo.registry import get_entry

    try:
        overrides = _parse_overrides(args.set)
        weights = Path(args.weights)
        variables = load_state_dict(args.source, args.model, weights,
                                    num_classes=args.num_classes, **overrides)
        metadata = {"model": args.model,
                    "num_classes": args.num_classes or get_entry(args.model).num_classes,
                    "overrides": overrides, "source": args.source, "weights": weights.name,
                    "sha256": _sha256(weights)}
        out = save_variables(args.out, variables, metadata)
    except ValueError as error:
        print(f"zoo convert: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({args.source} {weights.name} -> {args.model})")
    return 0


def _restore_workdir(workdir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(variables, {"model", "num_classes", "overrides", "image_size"}) of the
    newest checkpoint of a `zoo train` workdir."""
    import orbax.checkpoint as ocp
    from orbax.checkpoint.path import step as step_lib

    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{str(workdir)!r} has no config.json; is it a `zoo train` workdir?")
    config = json.loads(config_path.read_text())
    directory = (workdir / "checkpoints").absolute()
    steps = sorted(step_lib.checkpoint_steps(directory)) if directory.is_dir() else []
    if not steps:
        raise ValueError(f"no complete checkpoint in {str(directory)!r}")
    with ocp.StandardCheckpointer() as checkpointer:
        state = checkpointer.restore(directory / str(steps[-1]) / "state")
    variables = {"params": state["params"]}
    if state.get("batch_stats"):
        variables["batch_stats"] = state["batch_stats"]
    info = {"model": config["model"], "num_classes": config["num_classes"],
            "overrides": dict(config.get("model_overrides") or ()),
            "image_size": config.get("image_size"), "step": steps[-1],
            "dataset": config.get("dataset"), "data_dir": config.get("data_dir")}
    return variables, info


def _normalization(args: argparse.Namespace, info: dict[str, Any],
                   channels: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) the exported function applies to raw pixels, or None.

    --mean/--std win; else a training run's dataset statistics; else
    ImageNet's for 3 channels (what torchvision and most timm weights expect)."""
    if not args.preprocess:
        if args.mean or args.std:
            raise ValueError("--mean/--std only apply with --preprocess")
        return None
    if args.mean or args.std:
        if not (args.mean and args.std):
            raise ValueError("--preprocess takes both --mean and --std, or neither")
        try:
            return (tuple(float(v) for v in args.mean.split(",")),
                    tuple(float(v) for v in args.std.split(",")))
        except ValueError:
            raise ValueError(f"--mean/--std expect comma-separated numbers, got "
                             f"{args.mean!r} and {args.std!r}") from None
    if info.get("dataset"):
        from zoo.data.sources import dataset_info, stats_for_channels

        data = dataset_info(info["dataset"], data_dir=info.get("data_dir"))
        mean, std = stats_for_channels(data.mean, data.std, channels)
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if channels == 3:
        from zoo.data.sources import IMAGENET_MEAN, IMAGENET_STD

        return IMAGENET_MEAN, IMAGENET_STD
    raise ValueError(f"--preprocess for a {channels}-channel model needs --mean and --std")


def _run_export(args: argparse.Namespace) -> int:
    from zoo.interop.export import (ExportSpec, check_new_directory, export_saved_model,
                                    export_stablehlo, save_stablehlo)
    from zoo.interop.pretrained import load_variables
    from zoo.registry import create_model, get_entry

    try:
        check_new_directory(Path(args.out))
        if args.workdir:
            variables, info = _restore_workdir(Path(args.workdir))
        else:
            variables, info = load_variables(args.checkpoint)
        model_name = args.model or info["model"]
        if model_name != info["model"]:
            raise ValueError(f"--model {model_name!r} but the weights are for {info['model']!r}")
        model = create_model(model_name, num_classes=info["num_classes"], **info["overrides"])
        size = (args.image_size or info.get("image_size") or info["overrides"].get("image_size")
                or get_entry(model_name).input_size)
        spec = ExportSpec(image_size=size, channels=model.in_channels, batch_size=args.batch_size,
                          normalize=_normalization(args, info, model.in_channels))
        metadata = {"model": model_name, "num_classes": info["num_classes"],
                    "image_size": size, "batch_size": args.batch_size,
                    "folded_batch_norm": args.fold}
        if args.format == "savedmodel":
            out = export_saved_model(model, variables, spec, args.out, fold=args.fold,
                                     metadata=metadata)
        else:
            platforms = args.platforms.split(",") if args.platforms else None
            exported = export_stablehlo(model, variables, spec, fold=args.fold,
                                        platforms=platforms)
            out = save_stablehlo(exported, args.out, metadata, spec)
    except ValueError as error:
        print(f"zoo export: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the `convert` and `export` sub-commands."""
    convert = subparsers.add_parser("convert", help="import torchvision / timm weights")
    convert.add_argument("--from", dest="source", choices=("torchvision", "timm"), required=True)
    convert.add_argument("--model", required=True, help="Zoo model name, e.g. resnet50")
    convert.add_argument("--weights", required=True,
                         help=".safetensors (read without torch) or .pth/.pt (torch, "
                              "weights_only=True)")
    convert.add_argument("--out", required=True, help="new directory for the Orbax checkpoint")
    convert.add_argument("--num-classes", type=int, default=None,
                         help="classifier size of the weights (default: the model's, 1000)")
    convert.add_argument("--set", action="append", metavar="FIELD=VALUE",
                         help="Zoo model field the weights need, e.g. --set image_size=384")
    convert.set_defaults(run=_run_convert)

    export = subparsers.add_parser("export", help="export the inference function for serving")
    where = export.add_mutually_exclusive_group(required=True)
    where.add_argument("--workdir", help="a `zoo train` workdir (its newest checkpoint)")
    where.add_argument("--checkpoint", help="a directory written by `zoo convert`")
    export.add_argument("--model", default=None, help="Zoo model name (checked against the "
                                                      "weights' metadata)")
    export.add_argument("--format", choices=("stablehlo", "savedmodel"), default="stablehlo")
    export.add_argument("--out", required=True, help="output directory")
    export.add_argument("--image-size", type=int, default=None,
                        help="input height and width (default: the run's or the model's)")
    export.add_argument("--batch-size", type=int, default=None,
                        help="fixed batch size (default: a symbolic batch dimension, so one "
                             "export serves any batch)")
    export.add_argument("--preprocess", action="store_true",
                        help="the export takes uint8 pixels and normalises them itself "
                             "(the run's dataset statistics, else ImageNet's)")
    export.add_argument("--mean", default=None, help="with --preprocess: per-channel means, "
                                                     "e.g. 0.5,0.5,0.5")
    export.add_argument("--std", default=None, help="with --preprocess: per-channel stds")
    export.add_argument("--no-fold", dest="fold", action="store_false",
                        help="keep BatchNorm as is instead of folding it into the convs")
    export.add_argument("--platforms", default=None,
                        help="comma-separated lowering platforms, e.g. cpu,cuda "
                             "(default: this machine's)")
    export.set_defaults(run=_run_export)

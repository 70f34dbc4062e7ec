"""`zoo train` and `zoo eval`.

    zoo train                                    # default recipe -> ./workdirs/digits_simple_cnn
    zoo train --config digits_simple_cnn --set epochs=5 --set optimizer.learning_rate=0.01
    zoo train --parallel pmap --workdir runs/a   # resumes if runs/a has checkpoints
    zoo train --dataset folder:/data/pets --num-classes 2 --set image_size=64
    zoo train --dataset tfds:mnist --data-dir ~/tensorflow_datasets
    zoo train --config folder_resnet18 --init-from weights/resnet18 --num-classes 2 --freeze-backbone
    zoo train --coordinator-address host0:1234 --num-processes 2 --process-id 0
    zoo eval --workdir runs/a --checkpoint best
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


def _run_train(args: argparse.Namespace) -> int:
    from zoo.train.config import apply_overrides, load_config
    from zoo.train.distributed import maybe_initialize_distributed

    try:
        config = load_config(args.config)
        overrides = list(args.set or [])
        if args.parallel is not None:
            overrides.append(f"parallel={args.parallel!r}")
        if args.dataset is not None:
            overrides.append(f"dataset={args.dataset!r}")
        if args.data_dir is not None:
            overrides.append(f"data_dir={args.data_dir!r}")
        if args.init_from is not None:
            overrides.append(f"init_from={args.init_from!r}")
        if args.num_classes is not None:
            overrides.append(f"num_classes={args.num_classes}")
        if args.freeze_backbone:
            overrides.append("freeze_backbone=True")
        config = apply_overrides(config, overrides)
    except ValueError as error:
        print(f"zoo train: {error}", file=sys.stderr)
        return 2
    maybe_initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    from zoo.train.loop import fit

    workdir = Path(args.workdir) if args.workdir else Path("workdirs") / config.name
    try:
        result = fit(config, workdir)
    except (ValueError, FloatingPointError) as error:
        print(f"zoo train: {error}", file=sys.stderr)
        return 1
    return 0 if result.stopped in ("completed", "preempted", "already complete") else 1


def _run_eval(args: argparse.Namespace) -> int:
    from zoo.train.loop import evaluate

    try:
        result = evaluate(None, args.workdir, which=args.checkpoint)
    except ValueError as error:
        print(f"zoo eval: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    print(f"{args.workdir} ({args.checkpoint}, step {result['step']}): top-1 {result['top1']:.2%}, "
          f"top-5 {result['top5']:.2%}, loss {result['loss']:.4f} on {int(result['count'])} images")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the `train` and `eval` sub-commands."""
    train = subparsers.add_parser("train", help="train a model from a recipe")
    train.add_argument("--config", default=None,
                       help="recipe name in experiments/configs/ or a .py path "
                            "(default: digits_simple_cnn)")
    train.add_argument("--workdir", default=None,
                       help="run directory (default: ./workdirs/<config name>)")
    train.add_argument("--parallel", choices=("jit", "pmap"), default=None,
                       help="data-parallel strategy (default: the config's, normally jit)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config field, e.g. --set optimizer.learning_rate=0.1")
    train.add_argument("--dataset", default=None,
                       help="digits | tfds:NAME[:VERSION] | folder:PATH (shorthand for --set dataset=...)")
    train.add_argument("--data-dir", default=None, help="where a TFDS dataset was prepared")
    train.add_argument("--init-from", default=None, metavar="DIR",
                       help="start from weights written by `zoo convert` (a head of another "
                            "size is re-initialised)")
    train.add_argument("--num-classes", type=int, default=None,
                       help="classifier size (shorthand for --set num_classes=K)")
    train.add_argument("--freeze-backbone", action="store_true",
                       help="with --init-from: train only the re-initialised tensors")
    train.add_argument("--coordinator-address", default=None, help="host:port of process 0")
    train.add_argument("--num-processes", type=int, default=None)
    train.add_argument("--process-id", type=int, default=None)
    train.set_defaults(run=_run_train)
    evaluate = subparsers.add_parser("eval", help="evaluate a checkpoint of a workdir")
    evaluate.add_argument("--workdir", required=True)
    evaluate.add_argument("--checkpoint", choices=("latest", "best", "ema"), default="latest")
    evaluate.set_defaults(run=_run_eval)

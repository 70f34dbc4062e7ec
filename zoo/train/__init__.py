"""Zoo's training engine: train any registered model on one device or many.

    from zoo.train import fit, evaluate, load_config, apply_overrides
    config = apply_overrides(load_config("digits_simple_cnn"), ["epochs=5"])
    fit(config, "workdirs/digits")            # resumes if the workdir has checkpoints
    evaluate(None, "workdirs/digits", which="best")

For timing the real step (zoo/bench):

    trainer = setup_training(model, tx, input_shape=(global_batch, H, W, C), parallel="jit")
    batch = trainer.put_batch({"image": images, "label": labels, "mask": mask})
    state, metrics = trainer.train_step(trainer.state, batch)   # state donated
    sums = trainer.eval_step(state, batch)
    lowered = trainer.lower_train_step(state, batch)
"""

from zoo.train.config import (
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
    apply_overrides,
    load_config,
)
from zoo.train.loop import FitResult, enable_compilation_cache, evaluate, fit
from zoo.train.optim import Optimizer, create_optimizer
from zoo.train.parallel import Trainer, create_mesh, setup_training
from zoo.train.state import TrainState
from zoo.train.steps import eval_step, train_step

__all__ = [
    "FitResult", "Optimizer", "OptimizerConfig", "ScheduleConfig", "TrainConfig", "TrainState",
    "Trainer", "apply_overrides", "create_mesh", "create_optimizer", "enable_compilation_cache",
    "eval_step", "evaluate", "fit", "load_config", "setup_training", "train_step",
]

"""ResNet-18 with the CIFAR stem (3x3/1 conv, no max-pool) on CIFAR-10 from TFDS.

Prepare once: pip install zoo[tf]; tfds build cifar10 --data_dir=DIR --file_format=array_record

Command:   zoo train --config cifar10_resnet18 --set data_dir=DIR
Hardware:  one GPU (about 200 epochs x 390 steps of batch 128); CPU is far too slow.
Expected:  about 93% test top-1: kuangliu/pytorch-cifar reports 93.02% for this
           model with SGD 0.1 / momentum 0.9 / wd 5e-4 / cosine / 200 epochs and
           pad-4 crop + flip (the "cifar" preset). Zoo has not measured this recipe.
"""

from zoo.train.config import OptimizerConfig, ScheduleConfig, TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        name="cifar10_resnet18",
        model="resnet18",
        num_classes=10,
        model_overrides=(("stem", "cifar"),),
        dataset="tfds:cifar10",
        train_split="train",
        eval_split="test",
        image_size=32,
        channels=3,
        augment="cifar",
        global_batch_size=128,
        epochs=200,
        optimizer=OptimizerConfig(name="sgd", learning_rate=0.1, momentum=0.9,
                                  nesterov=False, weight_decay=5e-4),
        schedule=ScheduleConfig(name="cosine"),
        checkpoint_every=2000,
        eval_every=2000,
        log_every=100,
        num_workers=4,
    )

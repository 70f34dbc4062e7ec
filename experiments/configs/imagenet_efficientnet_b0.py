"""EfficientNet-B0 on ImageNet-1k from TFDS (see imagenet_resnet50.py to prepare the data).

Command:   zoo train --config imagenet_efficientnet_b0 --set data_dir=DIR
Hardware:  8 GPUs (A100/H100 class) or a TPU v4-8, global batch 2048 in bf16, 350 epochs.
Expected:  the paper (Tan & Le 2019) reports 77.1% top-1 with RMSProp (decay 0.9,
           momentum 0.9, lr 0.256 per 4096), 350 epochs, AutoAugment, weight decay
           1e-5, EMA 0.9999. Zoo's optimizers have no RMSProp, so this recipe uses
           Nesterov SGD + cosine + RandAugment + label smoothing 0.1 + EMA: expect
           the same neighbourhood, not the same number. Zoo has not measured it.
"""

from zoo.train.config import OptimizerConfig, ScheduleConfig, TrainConfig

GLOBAL_BATCH = 2048


def get_config() -> TrainConfig:
    return TrainConfig(
        name="imagenet_efficientnet_b0",
        model="efficientnet_b0",
        num_classes=1000,
        dataset="tfds:imagenet2012",
        train_split="train",
        eval_split="validation",
        image_size=224,
        channels=3,
        augment="randaugment",  # random-resized crop + flip + RandAugment(2, 9)
        global_batch_size=GLOBAL_BATCH,
        epochs=350,
        optimizer=OptimizerConfig(name="sgd", learning_rate=0.1 * GLOBAL_BATCH / 256,
                                  momentum=0.9, nesterov=True, weight_decay=1e-5),
        schedule=ScheduleConfig(name="cosine", warmup_epochs=5.0),
        label_smoothing=0.1,
        ema_decay=0.9999,
        dtype="bfloat16",
        checkpoint_every=5000,
        eval_every=5000,
        log_every=100,
        num_workers=16,
    )

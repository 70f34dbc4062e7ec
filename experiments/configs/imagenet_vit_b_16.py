"""ViT-B/16 from scratch on ImageNet-1k from TFDS (see imagenet_resnet50.py to prepare the data).

Command:   zoo train --config imagenet_vit_b_16 --set data_dir=DIR
Hardware:  8 GPUs (A100/H100 class, 80 GB) or a TPU v4-8; global batch 4096 in
           bf16 (lower it with optimizer.accumulation on smaller memory), 300 epochs.
Expected:  torchvision's recipe for vit_b_16 reaches 81.07% top-1 (AdamW lr 3e-3,
           wd 0.3, batch 4096, 300 epochs, 30 warm-up epochs, label smoothing 0.11,
           RandAugment, mixup 0.2, cutmix 1.0, grad clip 1.0, EMA), which this
           recipe follows. Zoo has not measured it.
"""

from zoo.train.config import OptimizerConfig, ScheduleConfig, TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        name="imagenet_vit_b_16",
        model="vit_b_16",
        num_classes=1000,
        dataset="tfds:imagenet2012",
        train_split="train",
        eval_split="validation",
        image_size=224,
        channels=3,
        augment="randaugment",
        global_batch_size=4096,
        epochs=300,
        optimizer=OptimizerConfig(name="adamw", learning_rate=3e-3, b1=0.9, b2=0.999,
                                  weight_decay=0.3, grad_clip=1.0),
        schedule=ScheduleConfig(name="cosine", warmup_epochs=30.0),
        label_smoothing=0.11,
        mixup_alpha=0.2,
        cutmix_alpha=1.0,
        ema_decay=0.99998,
        dtype="bfloat16",
        checkpoint_every=2000,
        eval_every=2000,
        log_every=100,
        num_workers=16,
    )

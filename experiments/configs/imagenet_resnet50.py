"""ResNet-50 on ImageNet-1k (ILSVRC2012) from TFDS: the Goyal et al. recipe + cosine + smoothing.

Prepare once (manual download; needs TensorFlow for this step only):
    pip install zoo[tf]
    tfds build imagenet2012 --data_dir=DIR --manual_dir=DIR_WITH_ILSVRC2012_img_{train,val}.tar \
        --file_format=array_record

Command:   zoo train --config imagenet_resnet50 --set data_dir=DIR
Hardware:  8 GPUs (A100/H100 class) or a TPU v4-8, global batch 1024 in bf16;
           the input pipeline needs thousands of decoded images/s, so give it
           many CPU cores (num_workers, per host).
Expected:  about 76.3% top-1 (Goyal et al. 2017, "Accurate, Large Minibatch SGD",
           90 epochs, lr 0.1 per 256 images, 5-epoch warm-up, step decay); cosine
           decay and label smoothing 0.1 add about +0.8 (He et al. 2019, "Bag of
           Tricks": 77.1%). Zoo has not measured this recipe.
"""

from zoo.train.config import OptimizerConfig, ScheduleConfig, TrainConfig

GLOBAL_BATCH = 1024


def get_config() -> TrainConfig:
    return TrainConfig(
        name="imagenet_resnet50",
        model="resnet50",
        num_classes=1000,
        dataset="tfds:imagenet2012",
        train_split="train",
        eval_split="validation",
        image_size=224,
        channels=3,
        augment="imagenet",  # random-resized crop + flip; eval: resize 256, center crop 224
        global_batch_size=GLOBAL_BATCH,
        epochs=90,
        optimizer=OptimizerConfig(name="sgd", learning_rate=0.1 * GLOBAL_BATCH / 256,
                                  momentum=0.9, nesterov=False, weight_decay=1e-4),
        schedule=ScheduleConfig(name="cosine", warmup_epochs=5.0),
        label_smoothing=0.1,
        dtype="bfloat16",
        checkpoint_every=5000,
        eval_every=5000,
        log_every=100,
        num_workers=16,
    )

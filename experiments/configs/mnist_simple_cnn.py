"""simple_cnn on MNIST, read offline from TFDS ArrayRecord (no TensorFlow at run time).

Prepare once (needs TensorFlow for this step only):
    pip install zoo[tf]
    tfds build mnist --data_dir=~/tensorflow_datasets --file_format=array_record

Command:   zoo train --config mnist_simple_cnn --set data_dir=~/tensorflow_datasets
Hardware:  any; one CPU core trains an epoch in minutes, one GPU in seconds.
Expected:  about 99.2% test top-1: the classic two-conv MNIST CNN (Keras
           examples/mnist_cnn.py) reports 99.25% after 12 epochs. Zoo has not
           measured this recipe.
"""

from zoo.train.config import OptimizerConfig, ScheduleConfig, TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        name="mnist_simple_cnn",
        model="simple_cnn",
        num_classes=10,
        dataset="tfds:mnist",
        data_dir=None,  # ~/tensorflow_datasets unless overridden
        train_split="train",
        eval_split="test",
        image_size=28,
        channels=1,
        augment="digits",  # +-10 deg rotation and 2-pixel shifts
        global_batch_size=128,
        epochs=12,
        optimizer=OptimizerConfig(name="adamw", learning_rate=1e-3, weight_decay=1e-4),
        schedule=ScheduleConfig(name="cosine", warmup_epochs=0.5),
        checkpoint_every=1000,
        eval_every=1000,
        log_every=100,
    )

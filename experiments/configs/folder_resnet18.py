"""The classic torchvision transfer-learning example: ResNet-18 on a class-folder tree.

Data: any ImageFolder layout, e.g. the tutorial's hymenoptera_data (ants vs bees):
    DIR/train/ants/*.jpg  DIR/train/bees/*.jpg  DIR/val/ants/*.jpg  DIR/val/bees/*.jpg

Command:   zoo train --config folder_resnet18 --set dataset=folder:DIR
           (--set num_classes=K for K classes; class_names.json is written to the workdir)
Hardware:  one GPU, or a CPU (about 250 training images x 25 epochs).
Expected:  the torchvision tutorial ("Transfer learning for computer vision",
           SGD lr 0.001 momentum 0.9, step decay x0.1 every 7 epochs, 25 epochs,
           batch 4) reports about 94-95% best validation accuracy on hymenoptera
           FINE-TUNING ImageNet-pretrained weights. Trained from scratch, as this
           recipe does unless pretrained weights are imported (zoo/interop), it
           will be far lower (a few hundred images). Zoo has not measured it.
"""

from zoo.train.config import OptimizerConfig, ScheduleConfig, TrainConfig

EPOCHS = 25


def get_config() -> TrainConfig:
    return TrainConfig(
        name="folder_resnet18",
        model="resnet18",
        num_classes=2,
        dataset="folder:data/hymenoptera_data",
        train_split="train",
        eval_split="val",
        image_size=224,
        channels=3,
        augment="imagenet",  # RandomResizedCrop(224) + flip; eval Resize(256) + CenterCrop(224)
        global_batch_size=4,
        epochs=EPOCHS,
        optimizer=OptimizerConfig(name="sgd", learning_rate=0.001, momentum=0.9, nesterov=False),
        schedule=ScheduleConfig(name="step", boundaries=(7 / EPOCHS, 14 / EPOCHS, 21 / EPOCHS),
                                decay_factor=0.1),
        checkpoint_every=500,
        eval_every=100,
        log_every=20,
    )

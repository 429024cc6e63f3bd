"""SSD512 on VGG-16, Pascal VOC 2007 trainval -> test.
    --set data.root=/data/VOCdevkit model.backbone_weights=/weights/vgg16_features.pth"""
from detkit.config import Config, DataConfig, EvalConfig, ModelConfig, ScheduleConfig, SolverConfig

config = Config(
    name="ssd512_vgg16_voc",
    model=ModelConfig(name="ssd512_vgg16"),
    data=DataConfig(format="voc", root="datasets/VOCdevkit", year="2007", train_split="trainval", val_split="test",
                    augment="ssd", size=512, batch_size=16, num_workers=4),
    solver=SolverConfig(optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4),
    schedule=ScheduleConfig(epochs=240, warmup_iters=500, decay="multistep", milestones=[160, 200]),
    eval=EvalConfig(period=20, metric="voc", key="mAP"),
)

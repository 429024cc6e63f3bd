"""Faster R-CNN on GoogLeNet-FPN, Pascal VOC 2007 trainval -> test
(the 1x schedule in epochs: 12, steps at 9 and 11).
    --set data.root=/data/VOCdevkit model.backbone_weights=/weights/googlenet.pth"""
from detkit.config import Config, DataConfig, EvalConfig, ModelConfig, ScheduleConfig, SolverConfig

config = Config(
    name="fasterrcnn_googlenet_fpn_voc",
    model=ModelConfig(name="fasterrcnn_googlenet_fpn", options={"min_size": 600, "max_size": 1000}),
    data=DataConfig(format="voc", root="datasets/VOCdevkit", year="2007", train_split="trainval", val_split="test",
                    augment="rcnn", min_size=[600], max_size=1000, batch_size=2, num_workers=4),
    solver=SolverConfig(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4),
    schedule=ScheduleConfig(epochs=12, warmup_iters=500, decay="multistep", milestones=[9, 11]),
    eval=EvalConfig(period=1, metric="voc", key="mAP"),
)

"""Faster R-CNN ResNet-50-FPN, COCO train2017 -> val2017: torchvision's
reference recipe (8 processes x 2 images, 26 epochs, steps at 16 and 22).
    --set data.root=/data/coco model.backbone_weights=/weights/resnet50.pth"""
from detkit.config import Config, DataConfig, EvalConfig, ModelConfig, ScheduleConfig, SolverConfig

config = Config(
    name="fasterrcnn_resnet50_fpn_coco",
    model=ModelConfig(name="fasterrcnn_resnet50_fpn", options={"trainable_backbone_layers": 3}),
    data=DataConfig(format="coco", root="datasets/coco", augment="rcnn", min_size=[800], max_size=1333,
                    batch_size=2, num_workers=4),
    solver=SolverConfig(optimizer="sgd", lr=0.02, momentum=0.9, weight_decay=1e-4),
    schedule=ScheduleConfig(epochs=26, warmup_iters=1000, decay="multistep", milestones=[16, 22]),
    eval=EvalConfig(period=2, metric="coco", key="AP"),
)

"""SSD300 on VGG-16, COCO train2017 -> val2017: torchvision's reference recipe
(8 processes x 4 images, 120 epochs, steps at 80 and 110; box AP 25.1).
    --set data.root=/data/coco model.backbone_weights=/weights/vgg16_features.pth"""
from detkit.config import Config, DataConfig, EvalConfig, ModelConfig, ScheduleConfig, SolverConfig

config = Config(
    name="ssd300_vgg16_coco",
    model=ModelConfig(name="ssd300_vgg16"),
    data=DataConfig(format="coco", root="datasets/coco", augment="ssd", size=300, batch_size=4, num_workers=4),
    solver=SolverConfig(optimizer="sgd", lr=2e-3, momentum=0.9, weight_decay=4e-5),
    schedule=ScheduleConfig(epochs=120, warmup_iters=1000, decay="multistep", milestones=[80, 110]),
    eval=EvalConfig(period=10, metric="coco", key="AP"),
)

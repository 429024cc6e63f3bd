"""A small Mask R-CNN (ResNet-18-FPN at quarter width) trained from scratch on
the Shapes set at 256 x 256, evaluated on masks (segm AP)."""
from detkit.config import Config, DataConfig, EvalConfig, ModelConfig, ScheduleConfig, ShapesConfig, SolverConfig

config = Config(
    name="maskrcnn_shapes",
    model=ModelConfig(name="maskrcnn_resnet18_fpn_small"),
    data=DataConfig(format="shapes", root="datasets/shapes", augment="rcnn", min_size=[256], max_size=256,
                    masks=True, batch_size=8, num_workers=1,
                    shapes=ShapesConfig(num_train=1000, num_val=100, image_size=256)),
    solver=SolverConfig(optimizer="adamw", lr=1e-3, weight_decay=1e-4, clip_grad_norm=10.0),
    schedule=ScheduleConfig(epochs=12, warmup_iters=100, decay="cosine"),
    eval=EvalConfig(period=3, metric="coco", key="AP50", iou_type="segm"),
)

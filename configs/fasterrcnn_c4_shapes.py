"""Faster R-CNN on ResNet-18's layer3 at quarter width (one stride-16 map, as
fastrcnn_shapes and rcnn_shapes), trained from scratch on the synthetic
Shapes set at 128 x 128, as two single-threaded DDP ranks: the lineage's
third step, where the RPN replaces selective search.

Anchors are 16-128 px (these objects are 19-58 px), 300 -> 150 RPN
proposals in training and 300 -> 100 at test, 64 RoIs sampled per image.
"""
from detkit.config import Config, DataConfig, EvalConfig, ModelConfig, ScheduleConfig, ShapesConfig, SolverConfig

config = Config(
    name="fasterrcnn_c4_shapes",
    model=ModelConfig(name="fasterrcnn_resnet18_c4",
                      options={"width": 0.25, "min_size": 128, "max_size": 128, "channels_last": True,
                               "anchor_sizes": [16, 32, 64, 128], "rpn_pre_nms_top_n": [300, 300],
                               "rpn_post_nms_top_n": [150, 100], "batch_size_per_image": 64,
                               "score_thresh": 0.01}),
    data=DataConfig(format="shapes", root="datasets/shapes", augment="rcnn_flips", min_size=[128], max_size=128,
                    batch_size=8, num_workers=0, shapes=ShapesConfig(num_train=8000, num_val=200, image_size=128)),
    solver=SolverConfig(optimizer="adamw", lr=2e-3, weight_decay=1e-4, clip_grad_norm=10.0),
    schedule=ScheduleConfig(epochs=6, warmup_iters=100, decay="cosine"),
    eval=EvalConfig(period=6, metric="coco", key="AP50"),
    processes=2,
)

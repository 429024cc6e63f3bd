"""A small Faster R-CNN (ResNet-18-FPN at quarter width) trained from scratch
on the synthetic Shapes set at 128 x 128, as two single-threaded DDP ranks.

`python tools/train.py configs/fasterrcnn_shapes.py` runs in about 13 minutes on
a 2-core CPU, generation and evaluation included (13 min 14 s at fp32 GEMM
265 GFLOP/s): box AP50 0.946 on the validation split, 0.955 (AP 0.839) on a
fresh Shapes set that nothing was tuned on (benchmarks/heldout.py).

Anchors are 16-256 px, one size per FPN map: torchvision's 32-512 suit
800 px images, while these objects are 19-58 px. 64 sampled RoIs per image
(the Fast R-CNN paper's count; torchvision's 512 is for COCO's crowded
images; the small model's default is 128) halve the RoI heads' work with 1-4
objects per image.
"""
from detkit.config import Config, DataConfig, EvalConfig, ModelConfig, ScheduleConfig, ShapesConfig, SolverConfig

config = Config(
    name="fasterrcnn_shapes",
    model=ModelConfig(name="fasterrcnn_resnet18_fpn_small",
                      options={"min_size": 128, "max_size": 128, "anchor_sizes": [16, 32, 64, 128, 256],
                               "batch_size_per_image": 64, "channels_last": True}),
    data=DataConfig(format="shapes", root="datasets/shapes", augment="rcnn_flips", min_size=[128], max_size=128,
                    batch_size=8, num_workers=0, shapes=ShapesConfig(num_train=8000, num_val=200, image_size=128)),
    solver=SolverConfig(optimizer="adamw", lr=2e-3, weight_decay=1e-4, clip_grad_norm=10.0),
    schedule=ScheduleConfig(epochs=6, warmup_iters=100, decay="cosine"),
    eval=EvalConfig(period=3, metric="coco", key="AP50"),
    processes=2,
)

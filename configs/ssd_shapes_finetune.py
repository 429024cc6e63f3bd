"""Fine-tuning on a CPU in minutes: the default Shapes SSD (`python tools/train.py`
writes work_dirs/ssd_shapes/best.pth) learns three shapes it has never seen
(the "novel" preset: ellipse, cross, ring). The checkpoint has 5 classes and
this data 3, so the classification head starts anew and everything else starts
from the checkpoint. benchmarks/finetune.py compares it with training from scratch.

    python tools/train.py configs/ssd_shapes_finetune.py --set model.weights=my_basic_run/best.pth
"""
from detkit.config import Config, DataConfig, EvalConfig, ModelConfig, ScheduleConfig, ShapesConfig, SolverConfig

config = Config(
    name="ssd_shapes_finetune",
    model=ModelConfig(name="ssd300_resnet18", weights="work_dirs/ssd_shapes/best.pth",
                      options={"width": 0.25, "size": 128, "channels_last": True,
                               "scales": [0.12, 0.2, 0.32, 0.46, 0.6, 0.75, 0.9], "iou_thresh": 0.4}),
    data=DataConfig(format="shapes", root="datasets/shapes", augment="flips", size=128, batch_size=16,
                    num_workers=0, shapes=ShapesConfig(num_train=1600, num_val=200, image_size=128,
                                                       preset="novel", seed=1)),
    solver=SolverConfig(optimizer="adamw", lr=2e-3, weight_decay=1e-4),
    schedule=ScheduleConfig(epochs=8, warmup_iters=20, decay="cosine"),
    eval=EvalConfig(period=1, metric="coco", key="AP50"),
    processes=2,
)

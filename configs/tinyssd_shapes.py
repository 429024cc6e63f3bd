"""TinySSD, the single-shot detector of "Dive into Deep Learning" (d2l.ai
14.7), with the book's anchors, labelling, loss and prediction, trained from
scratch on the synthetic Shapes set at 128 x 128 as two single-threaded
DDP ranks.

The book trains on 256 px banana images with SGD; here the input is the
Shapes set's own 128 px (1364 anchors, sizes 0.2-0.96 of the image against
objects of 0.15-0.45) and AdamW, as for the other Shapes configs.
"""
from detkit.config import Config, DataConfig, EvalConfig, ModelConfig, ScheduleConfig, ShapesConfig, SolverConfig

config = Config(
    name="tinyssd_shapes",
    model=ModelConfig(name="tinyssd", options={"size": 128}),
    data=DataConfig(format="shapes", root="datasets/shapes", augment="flips", size=128, batch_size=16,
                    num_workers=0, shapes=ShapesConfig(num_train=8000, num_val=200, image_size=128)),
    solver=SolverConfig(optimizer="adamw", lr=4e-3, weight_decay=1e-4),
    schedule=ScheduleConfig(epochs=6, warmup_iters=100, decay="cosine"),
    eval=EvalConfig(period=6, metric="coco", key="AP50"),
    processes=2,
)

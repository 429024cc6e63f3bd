"""The default demo: a half-width SSD on ResNet-18, trained from scratch on the
synthetic Shapes set at 128 x 128. `python tools/train.py` runs it on a 2-core
CPU in under 10 minutes, generation and evaluation included."""
from detkit.config import Config, DataConfig, EvalConfig, ModelConfig, ScheduleConfig, ShapesConfig, SolverConfig

config = Config(
    name="ssd_shapes",
    model=ModelConfig(name="ssd300_resnet18", options={"width": 0.5, "size": 128, "channels_last": True}),
    data=DataConfig(format="shapes", root="datasets/shapes", augment="light", size=128, batch_size=16,
                    num_workers=1, shapes=ShapesConfig(num_train=4000, num_val=200, image_size=128)),
    solver=SolverConfig(optimizer="adamw", lr=2e-3, weight_decay=1e-4),
    schedule=ScheduleConfig(epochs=12, warmup_iters=100, decay="cosine"),
    eval=EvalConfig(period=3, metric="coco", key="AP50"),
)

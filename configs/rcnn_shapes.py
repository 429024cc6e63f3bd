"""R-CNN (Girshick et al., 2014) on ResNet-18's layer3 at quarter width,
trained from scratch on the synthetic Shapes set at 128 x 128, as two
single-threaded DDP ranks.

Every proposal (selective search, as for fastrcnn_shapes) is dilated by the
paper's context padding, warped to 64 x 64 and run through the CNN on its
own; training windows are foreground from IoU 0.5, background below, 64 per
image (the paper's 128 per two images), 25% foreground, and the box
regressor learns from windows of IoU >= 0.6. The per-crop CNN makes it the
slowest of the lineage to train and run: benchmarks/lineage.py measures how much.
"""
from detkit.config import Config, DataConfig, EvalConfig, ModelConfig, ScheduleConfig, ShapesConfig, SolverConfig

config = Config(
    name="rcnn_shapes",
    model=ModelConfig(name="rcnn_resnet18_c4",
                      options={"width": 0.25, "min_size": 128, "max_size": 128, "channels_last": True,
                               "crop_size": 64, "score_thresh": 0.01}),
    data=DataConfig(format="shapes", root="datasets/shapes", augment="rcnn_flips", min_size=[128], max_size=128,
                    batch_size=2, num_workers=0, proposals="selective_search",
                    shapes=ShapesConfig(num_train=8000, num_val=200, image_size=128)),
    solver=SolverConfig(optimizer="adamw", lr=1e-3, weight_decay=1e-4, clip_grad_norm=10.0),
    schedule=ScheduleConfig(epochs=2, warmup_iters=200, decay="cosine"),
    eval=EvalConfig(period=2, metric="coco", key="AP50"),
    processes=2,
)

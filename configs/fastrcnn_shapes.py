"""Fast R-CNN (Girshick, 2015) on ResNet-18's layer3 at quarter width,
trained from scratch on the synthetic Shapes set at 128 x 128, as two
single-threaded DDP ranks.

Proposals: selective search ("fast", up to 2000 per image), computed once
for the training split into the dataset's proposals/ folder and read with
the images (data.proposals); at evaluation the model runs selective search
on each image itself. Each rank's step is the paper's hierarchical
mini-batch: 2 images, 64 RoIs from each (25% foreground at IoU >= 0.5,
background in [0.1, 0.5)), RoIPool 7x7, softmax and class-specific boxes.
benchmarks/lineage.py trains it beside R-CNN, Faster R-CNN and the SSDs.
"""
from detkit.config import Config, DataConfig, EvalConfig, ModelConfig, ScheduleConfig, ShapesConfig, SolverConfig

config = Config(
    name="fastrcnn_shapes",
    model=ModelConfig(name="fastrcnn_resnet18_c4",
                      options={"width": 0.25, "min_size": 128, "max_size": 128, "channels_last": True,
                               "score_thresh": 0.01}),
    data=DataConfig(format="shapes", root="datasets/shapes", augment="rcnn_flips", min_size=[128], max_size=128,
                    batch_size=2, num_workers=0, proposals="selective_search",
                    shapes=ShapesConfig(num_train=8000, num_val=200, image_size=128)),
    solver=SolverConfig(optimizer="adamw", lr=1e-3, weight_decay=1e-4, clip_grad_norm=10.0),
    schedule=ScheduleConfig(epochs=5, warmup_iters=200, decay="cosine"),
    eval=EvalConfig(period=5, metric="coco", key="AP50"),
    processes=2,
)

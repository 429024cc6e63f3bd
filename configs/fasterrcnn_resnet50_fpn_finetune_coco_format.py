"""Train on your own data: Faster R-CNN ResNet-50-FPN, starting from
torchvision's COCO weights, fine-tuned on a COCO-format dataset with any
number of classes (the class layers start anew; everything else from COCO).
The schedule is torchvision's fine-tuning tutorial's: SGD 0.005, momentum
0.9, weight decay 5e-4, 2 images a batch, the rate divided by 10 every 3
epochs, 10 epochs. The data layout it expects (paths relative to data.root):

    my_data/
      images/train/*.jpg   images/val/*.jpg
      annotations/train.json   annotations/val.json   (COCO: images, annotations with bbox, categories)

    python tools/train.py configs/fasterrcnn_resnet50_fpn_finetune_coco_format.py --set data.root=my_data
"""
from detkit.config import Config, DataConfig, EvalConfig, ModelConfig, ScheduleConfig, SolverConfig

config = Config(
    name="fasterrcnn_resnet50_fpn_finetune_coco_format",
    model=ModelConfig(name="fasterrcnn_resnet50_fpn", weights="COCO_V1", options={"trainable_backbone_layers": 3}),
    data=DataConfig(format="coco", root="my_data", train_images="images/train", val_images="images/val",
                    train_ann="annotations/train.json", val_ann="annotations/val.json", augment="rcnn",
                    min_size=[800], max_size=1333, batch_size=2, num_workers=2),
    solver=SolverConfig(optimizer="sgd", lr=0.005, momentum=0.9, weight_decay=5e-4),
    schedule=ScheduleConfig(epochs=10, warmup_iters=100, decay="multistep", milestones=[3, 6, 9]),
    eval=EvalConfig(period=1, metric="coco", key="AP"),
)

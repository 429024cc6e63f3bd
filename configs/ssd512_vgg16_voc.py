"""SSD512 on VGG-16, Pascal VOC 2007 trainval -> test: the SSD300 VOC recipe
at 512 x 512 with half the batch.
    --set data.root=/data/VOCdevkit model.backbone_weights=/weights/vgg16_features.pth"""
import os

from detkit.config import load_config

config = load_config(os.path.join(os.path.dirname(__file__), "ssd300_vgg16_voc.py"))
config.name = "ssd512_vgg16_voc"
config.model.name = "ssd512_vgg16"
config.data.size = 512
config.data.batch_size = 16

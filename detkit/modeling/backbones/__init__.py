"""Backbones: VGG-16 (SSD form), ResNet-18/34/50/101, GoogLeNet."""
from .googlenet import GoogLeNet
from .resnet import ResNet
from .vgg import SSDVGG16, VGG16C5

__all__ = ["GoogLeNet", "ResNet", "SSDVGG16", "VGG16C5"]

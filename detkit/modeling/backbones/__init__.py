"""Backbones: VGG-16 (SSD form), ResNet-18/34/50/101, GoogLeNet, MobileNetV3-Large; the textbook LeNet, AlexNet, NiN."""
from .googlenet import GoogLeNet
from .mobilenet import MobileNetV3Large
from .resnet import ResNet, ResNetC4
from .textbook import AlexNet, LeNet, NiN
from .vgg import SSDVGG16, VGG16C5

__all__ = ["AlexNet", "GoogLeNet", "LeNet", "MobileNetV3Large", "NiN", "ResNet", "ResNetC4", "SSDVGG16", "VGG16C5"]

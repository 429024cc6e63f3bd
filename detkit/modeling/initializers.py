"""Weight initialisation shared by the detection heads and extra layers."""
from torch import nn


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every Conv2d in `module`
    (torchvision's SSD initialisation)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.0)

"""detkit: object detection for PyTorch with compiled CPU box ops."""
from . import ops

__version__ = "0.1.0"

__all__ = ["ops", "__version__"]

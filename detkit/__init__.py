"""detkit: object detection for PyTorch with compiled CPU box ops."""
from . import ops

__version__ = "0.1.0"

__all__ = ["detect", "load_model", "clear_model_cache", "ops", "__version__"]


def __getattr__(name: str):
    # the API functions pull in the models and data stack; load it on first use only.
    if name in ("detect", "load_model", "clear_model_cache"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'detkit' has no attribute {name!r}")

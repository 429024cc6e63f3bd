"""Training, evaluation and checkpoint machinery behind tools/ and detkit.api."""
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .trainer import NonFiniteLossError, TrainState, train

__all__ = ["CheckpointError", "NonFiniteLossError", "TrainState", "load_checkpoint", "save_checkpoint", "train"]

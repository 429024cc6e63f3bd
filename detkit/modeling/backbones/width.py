"""Width multipliers for the backbones."""


def scaled_channels(channels: int, width: float) -> int:
    """`channels` times the width multiplier, rounded, at least 8."""
    return max(8, int(round(channels * width)))

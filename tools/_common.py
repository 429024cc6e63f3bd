"""What the tools share: the default config, and turning known errors into one
clear line instead of a traceback."""
from __future__ import annotations

import os
import sys
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "ssd_shapes.py")


def load_tool_config(path: str, overrides: list[str]):
    from detkit.config import load_config

    return load_config(path, overrides)


def fail_cleanly(main: Callable[[], int]) -> int:
    """Runs `main`; errors about the user's input (files, configs, checkpoints,
    a diverging loss) print one line and exit 1. Set DETKIT_TRACEBACK=1 to see
    the whole traceback."""
    from detkit.config import ConfigError
    from detkit.engine import CheckpointError, NonFiniteLossError

    known = (ConfigError, CheckpointError, NonFiniteLossError, FileNotFoundError, ValueError, OSError)
    try:
        return main()
    except known as exc:
        if os.environ.get("DETKIT_TRACEBACK"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is intact", file=sys.stderr)
        return 130

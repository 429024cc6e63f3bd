"""Progress bars on stderr: tqdm without its monitor thread.

tqdm starts a daemon thread (`tqdm_monitor`) with the first bar it makes,
even a disabled one, and keeps it to the end of the process. A daemon thread
that still runs Python code while the interpreter shuts down can crash it: the
test suite ended with a segfault in that thread after training runs had
created bars and forked DataLoader workers. The monitor only lowers
`miniters` for bars that stall, which detkit's bars do not need.
"""
from tqdm import tqdm


class ProgressBar(tqdm):
    """tqdm, as detkit shows it; `monitor_interval = 0` means no monitor thread."""

    monitor_interval = 0

"""detkit's progress bars start no thread: tqdm's monitor, a daemon thread
that lives to the end of the process, crashed the interpreter at exit."""
import subprocess
import sys
import textwrap


def test_progress_bars_leave_no_thread_behind():
    # A fresh process: another test's plain tqdm may already have started the monitor here.
    script = textwrap.dedent("""
        import threading
        from detkit.io.progress import ProgressBar
        for _ in ProgressBar(range(3), disable=True):  # how the trainer makes its bar when progress is off
            pass
        with ProgressBar(total=2) as bar:
            bar.update(2)
        ProgressBar.write("done")
        print(sorted(thread.name for thread in threading.enumerate()))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == ["done", "['MainThread']"]

"""Real faults: tools/train.py killed with SIGKILL at random (seeded) moments,
between steps and inside checkpoint writes, one process and one of two
spawned ranks. Each time --resume continues from the last complete
checkpoint, no temporary file survives the next start, and the final weights
equal an uninterrupted run's bit for bit. Both runs keep a moving average of
the weights and train under bfloat16 autocast where the CPU has it (EMA_BF16):
the average and the bfloat16 steps resume exactly too."""
import os
import random
import signal
import subprocess
import sys
import time

import torch

from detkit.config import apply_overrides
from detkit.engine import load_checkpoint

from tests.conftest import EMA_BF16
from tests.engine.test_trainer import assert_same_run
from tests.helpers import REPO

TRAIN = os.path.join(REPO, "tools", "train.py")

# tools/train.py with torch.save trickling its bytes out, so that a checkpoint
# write lasts long enough (8 pieces, 30 ms apart) for a kill to land inside it.
# The patch lives in the test's process only; the library has no hook for it.
SLOW_WRITES = f"""
import io, runpy, sys, time, torch
save = torch.save
def trickle(obj, f, *args, **kwargs):
    buffer = io.BytesIO()
    save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    piece = len(data) // 8 + 1
    for start in range(0, len(data), piece):
        f.write(data[start:start + piece])
        f.flush()
        time.sleep(0.03)
torch.save = trickle
sys.path.insert(0, {os.path.dirname(TRAIN)!r})
sys.argv = [{TRAIN!r}] + sys.argv[1:]
runpy.run_path({TRAIN!r}, run_name="__main__")
"""


def write_config(path, config):
    path.write_text(f"from detkit.config import Config\nconfig = Config.from_dict({config.to_dict()!r})\n")
    return str(path)


class Run:
    """tools/train.py in a subprocess, its output in files (a full pipe would stall it)."""

    def __init__(self, args, log_dir, slow_writes=False, env=None):
        self.out, self.err = (open(os.path.join(log_dir, f"{time.monotonic_ns()}.{n}"), "w+") for n in ("out", "err"))
        command = [sys.executable, "-c", SLOW_WRITES, *args] if slow_writes else [sys.executable, TRAIN, *args]
        self.process = subprocess.Popen(command, stdout=self.out, stderr=self.err, cwd=REPO, env=env)

    def stderr(self):
        self.err.seek(0)
        return self.err.read()

    def wait_until(self, condition, what, timeout=120.0):
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"the run ended (code {self.process.returncode}) before {what}:\n" \
                                                f"{self.stderr()[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} after {timeout} s"
            time.sleep(0.005)

    def finish(self, timeout=180):
        code = self.process.wait(timeout=timeout)
        assert code == 0, self.stderr()[-3000:]

    def kill(self):
        assert self.process.poll() is None, "the run ended before the kill"
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=30) == -signal.SIGKILL


def temp_files(work_dir, suffix=""):
    return {n for n in os.listdir(work_dir) if n.startswith(".tmp-") and n.endswith(suffix)}


def checkpoint_id(path):
    """Changes whenever last.pth is replaced (each write renames a new file over it)."""
    return os.stat(path).st_ino if os.path.exists(path) else None


def test_sigkill_between_steps_and_inside_checkpoint_writes(trained_ema_bf16, tmp_path):
    """One process, a checkpoint after every step: killed once at a random
    moment after its first checkpoint, then twice inside a checkpoint write
    (a partial temporary file is there at the kill), then resumed to the
    end: the same weights, moving average, optimizer, generators and log as
    `trained_ema_bf16`."""
    config, reference = trained_ema_bf16
    rng = random.Random(15)
    work_dir = str(tmp_path / "run")
    last = os.path.join(work_dir, "last.pth")
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the reference's: kernels sum alike
    args = [write_config(tmp_path / "tiny.py", config), "--work-dir", work_dir, "--no-progress",
            "--set", "checkpoint.period_iters=1"]

    run = Run(args, tmp_path, env=env)
    run.wait_until(lambda: os.path.exists(last), "a first checkpoint")
    time.sleep(rng.uniform(0.0, 0.5))
    run.kill()
    resumed_from = [load_checkpoint(last)["iteration"]]

    mid_write_kills = 0
    for attempt in range(5):
        stale = temp_files(work_dir)  # a killed write's leftovers, deleted when the next run starts
        run = Run(args + ["--resume"], tmp_path, slow_writes=True, env=env)
        writes = rng.choice([1, 2])  # kill inside the first or the second checkpoint write of this run
        seen = set()

        def writing():
            seen.update(temp_files(work_dir, ".pth") - stale)
            return len(seen) >= writes and temp_files(work_dir, ".pth") - stale

        run.wait_until(writing, f"checkpoint write {writes}")
        time.sleep(rng.uniform(0.0, 0.08))
        run.kill()
        partial = temp_files(work_dir, ".pth") - stale
        assert not stale & temp_files(work_dir), "the resumed run did not delete the killed write's temporary file"
        mid_write_kills += bool(partial)  # a busy machine may let the write finish first; then try again
        resumed_from.append(load_checkpoint(last)["iteration"])  # the last complete checkpoint still loads
        if mid_write_kills == 2:
            break
    assert mid_write_kills == 2, "no kill landed inside a checkpoint write"
    assert resumed_from == sorted(resumed_from) and resumed_from[-1] < 6, resumed_from

    Run(args + ["--resume"], tmp_path, env=env).finish()
    assert not temp_files(work_dir), "a temporary file was left behind"
    assert_same_run(work_dir, reference)


def spawned_ranks(launcher_pid):
    """The PIDs of the launcher's spawned ranks, in rank order (they are started one after another)."""
    ranks = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read()
        except OSError:  # gone meanwhile
            continue
        if parent == launcher_pid and b"spawn_main" in command:
            ranks.append(int(pid))
    return sorted(ranks)


def test_sigkill_of_one_of_two_ranks_ends_the_run_and_resumes(trained, tmp_path):
    """processes=2: killing one spawned rank ends the whole run at once with
    a message naming the rank (the other would wait in gloo for 30 min);
    --resume then gives one uninterrupted 2-rank run's weights bit for bit."""
    rng = random.Random(16)
    config, _ = trained  # its Shapes set is on disk; 2 ranks x 2 images: 3 steps in the one epoch
    two_ranks = apply_overrides(config, ["processes=2", "data.batch_size=2", "data.num_workers=0",
                                         "schedule.epochs=1", "checkpoint.period_iters=1", *EMA_BF16])
    config_file = write_config(tmp_path / "two_ranks.py", two_ranks)
    args = lambda work_dir: [config_file, "--work-dir", work_dir, "--no-progress"]  # noqa: E731
    reference = Run(args(str(tmp_path / "reference")), tmp_path)
    work_dir = str(tmp_path / "run")
    run = Run(args(work_dir), tmp_path)
    run.wait_until(lambda: os.path.exists(os.path.join(work_dir, "last.pth")), "a first checkpoint")
    time.sleep(rng.uniform(0.0, 0.3))
    ranks = spawned_ranks(run.process.pid)
    assert len(ranks) == 2, ranks
    victim = rng.randrange(2)
    os.kill(ranks[victim], signal.SIGKILL)
    assert run.process.wait(timeout=60) == 1, "the launcher did not end after a rank was killed"
    assert f"error: rank {victim} of 2 was killed by signal SIGKILL; the other ranks were stopped; --resume " \
           f"continues from {work_dir}/last.pth" in run.stderr()
    assert not any(os.path.exists(f"/proc/{pid}") for pid in ranks), "a rank outlived the launcher"
    assert load_checkpoint(os.path.join(work_dir, "last.pth"))["epoch_iteration"] in (1, 2)
    Run(args(work_dir) + ["--resume"], tmp_path).finish()
    reference.finish()
    assert not temp_files(work_dir), "a temporary file was left behind"
    assert_same_run(work_dir, str(tmp_path / "reference"))

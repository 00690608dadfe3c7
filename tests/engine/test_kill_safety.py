"""Kill safety: ``tools/lazyconfig_train_net.py`` killed with SIGKILL (kill -9) resumes to the same weights.

Each run is a real subprocess training the tiny net of ``_tiny.py`` for 8 iterations on CPU with a checkpoint
every 2 iterations (``model_0000001.pth``, ``model_0000003.pth``, ``model_0000005.pth``, ``model_final.pth``).
A small runner around the tool makes the kill land at a chosen point: after the 2nd checkpoint is saved, or
in the middle of writing the 3rd (half of its bytes on disk), the child announces it on stdout and waits;
the test then sends SIGKILL, so nothing in the child can clean up.

Logged losses: ``metrics.json`` holds losses smoothed over ``train.smoothing_window`` iterations (a median).
The window's history before the kill is not in the checkpoint, so with a window > 1 the logged values differ
from the uninterrupted run's for a window's worth of iterations after resuming (training itself is identical).
These runs use a window of 1, so the logged losses after resuming must equal the uninterrupted run's too.
"""

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from libdet.checkpoint import DetectionCheckpointer

from ._tiny import TinyNet

pytestmark = pytest.mark.slow  # five training processes, about 25 s on one core

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "lazyconfig_train_net.py")
MAX_ITER = 8

CONFIG = """
import torch
from fvcore.common.param_scheduler import MultiStepParamScheduler

from libdet.config import LazyCall as L
from libdet.solver import WarmupParamScheduler, get_default_optimizer_params
from tests.engine._tiny import TinyNet, train_loader

model = L(TinyNet)()
dataloader = dict(train=L(train_loader)(num_workers=0, batch_size=2, seed=7, size=10))
optimizer = L(torch.optim.SGD)(params=L(get_default_optimizer_params)(), lr=0.05, momentum=0.9)
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[5], num_updates=8),
    warmup_length=0.25,
    warmup_factor=0.1,
)
train = dict(
    output_dir="./output",
    init_checkpoint="",
    max_iter=8,
    device="cpu",
    seed=3,
    checkpointer=dict(period=2, max_to_keep=None),
    eval_period=0,
    log_period=1,
    smoothing_window=1,
    amp=dict(enabled=False),
)
"""

# Runs the tool in this process after wrapping DetectionCheckpointer.save (and torch.save inside it) so that the
# process stops at the chosen point and waits for the SIGKILL.
RUNNER = """
import io, os, runpy, sys, time

import torch

from libdet.checkpoint import DetectionCheckpointer

mode, kill_at = os.environ["KILL_MODE"], int(os.environ["KILL_AT"])  # "after" / "during" / "none"; save number
saves = [0]
real_checkpointer_save, real_torch_save = DetectionCheckpointer.save, torch.save


def wait_for_kill(message):
    print(message, flush=True)
    time.sleep(300)
    sys.exit("runner: was not killed")


def torch_save(obj, f, *args, **kwargs):
    if mode == "during" and saves[0] == kill_at:
        buf = io.BytesIO()
        real_torch_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        wait_for_kill("KILL-ME mid-write of checkpoint %d" % saves[0])
    return real_torch_save(obj, f, *args, **kwargs)


def checkpointer_save(self, name, **kwargs):
    saves[0] += 1
    real_checkpointer_save(self, name, **kwargs)
    if mode == "after" and saves[0] == kill_at:
        wait_for_kill("KILL-ME after checkpoint %s" % name)


torch.save = torch_save
DetectionCheckpointer.save = checkpointer_save
sys.argv = [TOOL, *sys.argv[1:]]
runpy.run_path(TOOL, run_name="__main__")
"""


def _run(tmp_path, name, *, kill_mode="none", kill_at=0, resume=False, timeout=120):
    """Run the tool in ``tmp_path/name``; with a kill mode, SIGKILL it at the announced point. Returns
    ``(returncode, output_dir, stderr)``."""
    config = tmp_path / "tiny_config.py"
    config.write_text(CONFIG)
    runner = tmp_path / "runner.py"
    runner.write_text(f"TOOL = {TOOL!r}\n" + textwrap.dedent(RUNNER))
    out = str(tmp_path / name)
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "KILL_MODE": kill_mode, "KILL_AT": str(kill_at)}
    args = [sys.executable, str(runner), "--config-file", str(config), *(["--resume"] if resume else [])]
    args.append(f"train.output_dir={out}")
    stderr_path = tmp_path / f"{name}.stderr"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, cwd=str(tmp_path), env=env)
        deadline = time.monotonic() + timeout
        killed = False
        try:
            while kill_mode != "none" and not killed:
                ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
                line = proc.stdout.readline() if ready else b""
                if b"KILL-ME" in line:
                    os.kill(proc.pid, signal.SIGKILL)  # kill -9: no handler, no cleanup
                    killed = True
                elif not line:  # EOF (the process ended without reaching the point) or timeout
                    break
            proc.stdout.read()
            returncode = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = stderr_path.read_text(errors="replace")
    if kill_mode != "none":
        assert killed and returncode == -signal.SIGKILL, f"{name}: not killed as planned\n{stderr[-3000:]}"
    else:
        assert returncode == 0, f"{name}: exit code {returncode}\n{stderr[-3000:]}"
    return returncode, out, stderr


def _final_weights(out):
    return torch.load(os.path.join(out, "model_final.pth"), weights_only=True)["model"]


def _losses(out):
    """The last logged ``total_loss`` per iteration (a resumed run appends to metrics.json)."""
    losses = {}
    with open(os.path.join(out, "metrics.json")) as f:
        for line in f:
            row = json.loads(line)
            if "total_loss" in row:
                losses[row["iteration"]] = row["total_loss"]
    return losses


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs from the uninterrupted run's"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kill_reference")
    _, out, _ = _run(tmp, "uninterrupted")
    return out


def test_kill_after_checkpoint_then_resume_is_bitwise_identical(reference, tmp_path):
    _, out, _ = _run(tmp_path, "run", kill_mode="after", kill_at=2)
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == "model_0000003.pth"
    assert not os.path.exists(os.path.join(out, "model_final.pth"))

    _run(tmp_path, "run", resume=True)
    _assert_same_weights(_final_weights(out), _final_weights(reference))
    ref_losses, losses = _losses(reference), _losses(out)
    # iteration 3 was trained and checkpointed, but the kill came before the writer hook (which runs after the
    # checkpointer) logged it; the resumed run starts at iteration 4
    assert sorted(losses) == [0, 1, 2, 4, 5, 6, 7]
    for it in range(4, MAX_ITER):  # iterations trained after resuming from iteration 3 (window 1: raw values)
        assert losses[it] == ref_losses[it], f"iteration {it}"


def test_kill_during_checkpoint_write_keeps_previous_checkpoint(reference, tmp_path):
    _, out, _ = _run(tmp_path, "run", kill_mode="during", kill_at=3)
    # the interrupted save of model_0000005.pth left its half-written bytes in a hidden temporary file (SIGKILL
    # allows no cleanup), never a truncated model_0000005.pth
    assert not os.path.exists(os.path.join(out, "model_0000005.pth"))
    leftovers = [f for f in os.listdir(out) if f.startswith(".model_0000005.pth.")]
    assert len(leftovers) == 1 and leftovers[0].endswith(".tmp"), os.listdir(out)
    assert os.path.getsize(os.path.join(out, leftovers[0])) > 0
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == "model_0000003.pth"
    # the previous checkpoint loads completely
    model = TinyNet()
    extra = DetectionCheckpointer(model).load(os.path.join(out, "model_0000003.pth"))
    assert extra["iteration"] == 3
    saved = torch.load(os.path.join(out, "model_0000003.pth"), weights_only=True)["model"]
    _assert_same_weights(model.state_dict(), saved)

    _run(tmp_path, "run", resume=True)
    _assert_same_weights(_final_weights(out), _final_weights(reference))

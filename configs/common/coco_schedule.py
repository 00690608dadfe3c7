"""Multi-step LR schedules of the COCO model zoo (detectron2's ``configs/common/coco_schedule.py``).

"1x" is 90k iterations at batch size 16 (about 12 COCO epochs) with the lr divided by 10 at 60k and 80k;
"Nx" schedules longer than 2x keep the two decays 60k and 20k iterations before the end (the schedule of
"Rethinking ImageNet Pre-training"). Each schedule starts with a 1000-iteration linear warmup from 0.001x.
The multipliers are functions of training progress, so they stretch with ``train.max_iter``.
"""

from fvcore.common.param_scheduler import MultiStepParamScheduler

from libdet.config import LazyCall as L
from libdet.solver import WarmupParamScheduler

__all__ = ["default_X_scheduler"]


def default_X_scheduler(num_X: float):
    """The config of an "``num_X``x" LR multiplier (90k iterations per 1x at batch size 16).

    Args:
        num_X: schedule length in units of 1x (e.g. 1, 3, 0.5); positive.

    Returns:
        A lazy ``WarmupParamScheduler`` config to assign to ``lr_multiplier``.
    """
    if not num_X > 0:
        raise ValueError(f"default_X_scheduler: num_X must be positive, got {num_X}.")
    total_steps_16bs = int(round(num_X * 90000))
    if num_X <= 2:
        # the 1x milestones, scale-free: the same as milestones at 6/9 and 8/9 of training
        milestones = [60000, 80000, 90000]
    else:
        milestones = [total_steps_16bs - 60000, total_steps_16bs - 20000, total_steps_16bs]
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=milestones),
        warmup_length=1000 / total_steps_16bs,
        warmup_method="linear",
        warmup_factor=0.001,
    )


lr_multiplier_1x = default_X_scheduler(1)
lr_multiplier_2x = default_X_scheduler(2)
lr_multiplier_3x = default_X_scheduler(3)
lr_multiplier_6x = default_X_scheduler(6)
lr_multiplier_9x = default_X_scheduler(9)

"""detectron2's ``new_baselines/mask_rcnn_regnetx_4gf_dds_FPN_200ep_LSJ.py``: the 100-epoch RegNetX-4GF LSJ recipe
trained 2x longer."""

from .mask_rcnn_regnetx_4gf_dds_FPN_100ep_LSJ import dataloader, lr_multiplier, model, optimizer, train

train.max_iter *= 2  # 100ep -> 200ep
lr_multiplier.scheduler.milestones = [m * 2 for m in lr_multiplier.scheduler.milestones]
lr_multiplier.scheduler.num_updates = train.max_iter

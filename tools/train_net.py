#!/usr/bin/env python
"""Train or evaluate a detectron2-style YAML config with :class:`DefaultTrainer`, as detectron2's
``tools/train_net.py``.

Usage::

    python tools/train_net.py --config-file libdet/model_zoo/yaml_configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml \
        --num-gpus 8 SOLVER.IMS_PER_BATCH 16 SOLVER.BASE_LR 0.02
    python tools/train_net.py --config-file cfg.yaml --resume                       # continue the last checkpoint
    python tools/train_net.py --config-file cfg.yaml --eval-only MODEL.WEIGHTS model_final.pth

Options after the named ones are ``KEY VALUE`` pairs merged into the config (``cfg.merge_from_list``). The YAML
config is translated into libdet's lazy config, so the model, data, optimizer, schedule and hooks are exactly
those of ``tools/lazyconfig_train_net.py`` for the equivalent lazy config. Evaluation picks the evaluator from each
test dataset's ``evaluator_type`` metadata; ``TEST.AUG.ENABLED`` adds test-time augmentation.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from libdet.checkpoint import DetectionCheckpointer
from libdet.config import CfgNode, get_cfg, instantiate
from libdet.config.yaml_translate import evaluator_config
from libdet.engine import DefaultTrainer, default_argument_parser, default_setup, hooks, launch
from libdet.evaluation import verify_results
from libdet.utils import comm

logger = logging.getLogger("libdet.tools.train_net")

__all__ = ["Trainer", "build_evaluator", "main", "setup"]


def build_evaluator(cfg: CfgNode, dataset_name: str, output_folder: str | None = None) -> Any:
    """The evaluator of ``dataset_name`` by its metadata's ``evaluator_type`` (``coco``, ``lvis``, ``sem_seg``,
    ``coco_panoptic_seg``, ``cityscapes_instance``, ``cityscapes_sem_seg``, ``pascal_voc``).

    Raises:
        NotImplementedError: the dataset names no evaluator type libdet knows.
    """
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    node = evaluator_config(cfg, dataset_name, output_folder)
    if node is None:
        raise NotImplementedError(f"No evaluator for dataset {dataset_name!r}: its metadata has no evaluator_type.")
    return instantiate(node)


class Trainer(DefaultTrainer):
    """:class:`DefaultTrainer` with the evaluators of :func:`build_evaluator` and test-time augmentation."""

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None) -> Any:
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test_with_TTA(cls, cfg: CfgNode, model: Any) -> dict[str, Any]:
        """Evaluate ``model`` wrapped in :class:`GeneralizedRCNNWithTTA` (``TEST.AUG`` sizes and flip); results
        are reported with a ``_TTA`` suffix."""
        from libdet.data import MetadataCatalog
        from libdet.data.detection_utils import create_keypoint_hflip_indices
        from libdet.modeling import DatasetMapperTTA, GeneralizedRCNNWithTTA

        logger.info("Running inference with test-time augmentation ...")
        aug = cfg.TEST.AUG
        flip_indices = None
        if cfg.MODEL.KEYPOINT_ON and len(cfg.DATASETS.TRAIN):
            flip_indices = create_keypoint_hflip_indices(list(cfg.DATASETS.TRAIN))
        metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0]) if len(cfg.DATASETS.TEST) else None
        tta_model = GeneralizedRCNNWithTTA(
            model,
            tta_mapper=DatasetMapperTTA(min_sizes=list(aug.MIN_SIZES), max_size=aug.MAX_SIZE, flip=aug.FLIP),
            keypoint_flip_indices=flip_indices,
            metadata=metadata,
        )
        evaluators = [
            cls.build_evaluator(cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA"))
            for name in cfg.DATASETS.TEST
        ]
        res = cls.test(cfg, tta_model, evaluators)
        if len(cfg.DATASETS.TEST) == 1:
            res = {cfg.DATASETS.TEST[0]: res}
        return OrderedDict((k + "_TTA", v) for k, v in res.items())


def setup(args: argparse.Namespace) -> CfgNode:
    """The config: defaults, merged with ``args.config_file`` and the ``KEY VALUE`` pairs of ``args.opts``, frozen;
    then the run set-up (output folder, logging, saved config, seeds)."""
    if not args.config_file:
        raise ValueError("train_net: --config-file is required.")
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts or []))
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args: argparse.Namespace) -> Any:
    """Train (``trainer.train()``'s return), or with ``--eval-only`` evaluate ``MODEL.WEIGHTS`` (or, with
    ``--resume``, the last checkpoint in ``OUTPUT_DIR``) and return the results."""
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            res.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process() and len(cfg.TEST.EXPECTED_RESULTS):
            if not verify_results(cfg.TEST.EXPECTED_RESULTS, res):
                raise RuntimeError(f"Evaluation results do not match TEST.EXPECTED_RESULTS: {res}")
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    if cfg.TEST.AUG.ENABLED:
        trainer.register_hooks([hooks.EvalHook(0, lambda: trainer.test_with_TTA(cfg, trainer.model))])
    return trainer.train()


def invoke_main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: parse ``argv`` and :func:`launch` :func:`main` on every process."""
    args = default_argument_parser().parse_args(argv)
    logger.info(f"Command Line Args: {args}")
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main(sys.argv[1:])

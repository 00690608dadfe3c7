"""Translate a detectron2 YAML config (:class:`CfgNode`) into libdet's lazy config.

:func:`translate_config` gives the five top-level keys every libdet tool reads — ``model``, ``dataloader``
(``train``, ``test``, ``evaluator``), ``optimizer``, ``lr_multiplier`` and ``train`` — as ``LazyCall`` trees of
libdet's own classes and builders (the model part is :mod:`libdet.config.yaml_model`). ``build_model(cfg)``,
``build_detection_train_loader(cfg)``, ``build_optimizer(cfg, model)``, ``DefaultPredictor(cfg)`` and
``DefaultTrainer(cfg)`` all instantiate these trees, so a YAML config trains exactly like its lazy twin.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from .config import CfgNode
from .yaml_nodes import L, as_config

__all__ = [
    "evaluator_config",
    "lr_multiplier_config",
    "optimizer_config",
    "test_loader_config",
    "train_config",
    "train_loader_config",
    "translate_config",
    "yaml_device",
]

logger = logging.getLogger(__name__)


def yaml_device(cfg: CfgNode) -> str:
    """``MODEL.DEVICE``; detectron2's default ``"cuda"`` becomes ``"cpu"`` (with a warning) on a machine without
    CUDA, so configs written for GPUs run unchanged on a laptop. Any other value is used as given."""
    import torch

    device = str(cfg.MODEL.DEVICE)
    if device == "cuda" and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE is 'cuda' but CUDA is not available: using the CPU.")
        return "cpu"
    return device


def _augmentations(cfg: CfgNode, is_train: bool) -> list[Any]:
    """detectron2's default augmentations: [RandomCrop], ResizeShortestEdge, RandomFlip (training); resize (test)."""
    import libdet.data.transforms as T

    i = cfg.INPUT
    if not is_train:
        if i.MIN_SIZE_TEST == 0:
            return []
        return [L(T.ResizeShortestEdge)(short_edge_length=i.MIN_SIZE_TEST, max_size=i.MAX_SIZE_TEST)]
    if i.MIN_SIZE_TRAIN_SAMPLING == "range" and len(i.MIN_SIZE_TRAIN) != 2:
        raise ValueError(
            f"INPUT.MIN_SIZE_TRAIN_SAMPLING='range' needs INPUT.MIN_SIZE_TRAIN=(min, max), got {i.MIN_SIZE_TRAIN}."
        )
    augs = [
        L(T.ResizeShortestEdge)(
            short_edge_length=tuple(i.MIN_SIZE_TRAIN), max_size=i.MAX_SIZE_TRAIN, sample_style=i.MIN_SIZE_TRAIN_SAMPLING
        )
    ]
    if i.RANDOM_FLIP not in ("horizontal", "vertical", "none"):
        raise ValueError(f"INPUT.RANDOM_FLIP={i.RANDOM_FLIP!r}: expected 'horizontal', 'vertical' or 'none'.")
    if i.RANDOM_FLIP != "none":
        augs.append(L(T.RandomFlip)(horizontal=i.RANDOM_FLIP == "horizontal", vertical=i.RANDOM_FLIP == "vertical"))
    if i.CROP.ENABLED:
        augs.insert(0, L(T.RandomCrop)(crop_type=i.CROP.TYPE, crop_size=tuple(i.CROP.SIZE)))
    return augs


def _mapper(cfg: CfgNode, is_train: bool) -> Any:
    from libdet.data import DatasetMapper
    from libdet.data.detection_utils import create_keypoint_hflip_indices

    kwargs: dict[str, Any] = {}
    if cfg.MODEL.KEYPOINT_ON and is_train:
        kwargs["keypoint_hflip_indices"] = L(create_keypoint_hflip_indices)(dataset_names=list(cfg.DATASETS.TRAIN))
    if cfg.MODEL.LOAD_PROPOSALS:
        d = cfg.DATASETS
        kwargs["precomputed_proposal_topk"] = (
            d.PRECOMPUTED_PROPOSAL_TOPK_TRAIN if is_train else d.PRECOMPUTED_PROPOSAL_TOPK_TEST
        )
    return L(DatasetMapper)(
        is_train=is_train,
        augmentations=_augmentations(cfg, is_train),
        image_format=cfg.INPUT.FORMAT,
        use_instance_mask=cfg.MODEL.MASK_ON,
        instance_mask_format=cfg.INPUT.MASK_FORMAT,
        use_keypoint=cfg.MODEL.KEYPOINT_ON,
        # a crop cuts masks: recompute the boxes from them
        recompute_boxes=bool(cfg.MODEL.MASK_ON and cfg.INPUT.CROP.ENABLED and is_train),
        **kwargs,
    )


def _names(value: Any, key: str) -> list[str]:
    names = [value] if isinstance(value, str) else list(value)
    if not names:
        raise ValueError(f"{key} is empty: name at least one dataset registered in DatasetCatalog.")
    return names


def train_loader_config(cfg: CfgNode, mapper: Any = None) -> Any:
    """``build_detection_train_loader`` node for ``DATASETS.TRAIN`` (``DATALOADER``, ``SOLVER.IMS_PER_BATCH``).

    Args:
        mapper: a mapper object or node; default the :class:`DatasetMapper` of the config.
    """
    from libdet.data import build_detection_train_loader, get_detection_dataset_dicts
    from libdet.data.samplers import RandomSubsetTrainingSampler

    names = _names(cfg.DATASETS.TRAIN, "DATASETS.TRAIN")
    dataset = L(get_detection_dataset_dicts)(
        names=names,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0,
        proposal_files=list(cfg.DATASETS.PROPOSAL_FILES_TRAIN) if cfg.MODEL.LOAD_PROPOSALS else None,
    )
    sampler_name = cfg.DATALOADER.SAMPLER_TRAIN
    if sampler_name == "TrainingSampler":
        sampler = None  # the loader's default, seeded like the rest of the run
    elif sampler_name == "RepeatFactorTrainingSampler":
        sampler = L(repeat_factor_sampler)(
            dataset=dataset, repeat_thresh=cfg.DATALOADER.REPEAT_THRESHOLD, sqrt=cfg.DATALOADER.REPEAT_SQRT
        )
    elif sampler_name == "RandomSubsetTrainingSampler":
        raise ValueError(
            "DATALOADER.SAMPLER_TRAIN='RandomSubsetTrainingSampler' needs a subset ratio, which detectron2's YAML "
            f"keys do not hold; build {RandomSubsetTrainingSampler.__name__} yourself in build_train_loader."
        )
    else:
        raise ValueError(
            f"DATALOADER.SAMPLER_TRAIN={sampler_name!r}: expected 'TrainingSampler' or 'RepeatFactorTrainingSampler'."
        )
    return L(build_detection_train_loader)(
        dataset=dataset,
        mapper=_mapper(cfg, True) if mapper is None else mapper,
        sampler=sampler,
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )


def repeat_factor_sampler(*, dataset: Any, repeat_thresh: float, sqrt: bool = True) -> Any:
    """A :class:`RepeatFactorTrainingSampler` whose repeat factors come from the category frequencies of
    ``dataset`` (a list of dataset dicts), as LVIS training uses it."""
    from libdet.data.samplers import RepeatFactorTrainingSampler

    factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dataset, repeat_thresh, sqrt=sqrt)
    return RepeatFactorTrainingSampler(factors)


def test_loader_config(cfg: CfgNode, dataset_name: str | None = None, mapper: Any = None) -> Any:
    """``build_detection_test_loader`` node for ``dataset_name`` (default: ``DATASETS.TEST[0]``).

    Precomputed proposals come from the ``DATASETS.PROPOSAL_FILES_TEST`` entry of the same index as the dataset in
    ``DATASETS.TEST``.
    """
    from libdet.data import build_detection_test_loader, get_detection_dataset_dicts

    tests = list(cfg.DATASETS.TEST)
    if dataset_name is None:
        dataset_name = _names(tests, "DATASETS.TEST")[0]
    proposal_files = None
    if cfg.MODEL.LOAD_PROPOSALS:
        if dataset_name not in tests:
            raise ValueError(f"MODEL.LOAD_PROPOSALS: dataset {dataset_name!r} is not in DATASETS.TEST {tests}.")
        proposal_files = [cfg.DATASETS.PROPOSAL_FILES_TEST[tests.index(dataset_name)]]
    return L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names=[dataset_name], filter_empty=False, proposal_files=proposal_files),
        mapper=_mapper(cfg, False) if mapper is None else mapper,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )


def evaluator_config(cfg: CfgNode, dataset_name: str, output_folder: str | None = None) -> Any:
    """The evaluator of ``dataset_name`` from its metadata's ``evaluator_type`` (as detectron2's
    ``tools/train_net.py`` chooses it), or ``None`` when the dataset names none libdet knows."""
    from libdet import evaluation as E
    from libdet.data import MetadataCatalog

    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    out = dict(output_dir=output_folder)
    evaluators = []
    if evaluator_type in ("sem_seg", "coco_panoptic_seg"):
        evaluators.append(L(E.SemSegEvaluator)(dataset_name=dataset_name, distributed=True, **out))
    if evaluator_type in ("coco", "coco_panoptic_seg"):
        evaluators.append(L(E.COCOEvaluator)(dataset_name=dataset_name, **out))
    if evaluator_type == "coco_panoptic_seg":
        evaluators.append(L(E.COCOPanopticEvaluator)(dataset_name=dataset_name, **out))
    if evaluator_type == "cityscapes_instance":
        evaluators.append(L(E.CityscapesInstanceEvaluator)(dataset_name=dataset_name))
    if evaluator_type == "cityscapes_sem_seg":
        evaluators.append(L(E.CityscapesSemSegEvaluator)(dataset_name=dataset_name))
    if evaluator_type == "pascal_voc":
        evaluators.append(L(E.PascalVOCDetectionEvaluator)(dataset_name=dataset_name))
    if evaluator_type == "lvis":
        evaluators.append(L(E.LVISEvaluator)(dataset_name=dataset_name, **out))
    if not evaluators:
        return None
    if len(evaluators) == 1:
        return evaluators[0]
    return L(E.DatasetEvaluators)(evaluators=evaluators)


def optimizer_config(cfg: CfgNode) -> Any:
    """SGD over :func:`get_default_optimizer_params` groups, as detectron2's ``build_optimizer`` (``params.model``
    is filled with the model before instantiation). ``SOLVER.CLIP_GRADIENTS`` becomes ``train.grad_transforms``
    here, and part of the optimizer in detectron2's ``build_optimizer(cfg, model)``."""
    import torch

    from libdet.solver import get_default_optimizer_params

    s = cfg.SOLVER
    return L(torch.optim.SGD)(
        params=L(get_default_optimizer_params)(
            base_lr=s.BASE_LR,
            weight_decay_norm=s.WEIGHT_DECAY_NORM,
            bias_lr_factor=s.BIAS_LR_FACTOR,
            weight_decay_bias=s.WEIGHT_DECAY_BIAS,
        ),
        lr=s.BASE_LR,
        momentum=s.MOMENTUM,
        nesterov=s.NESTEROV,
        weight_decay=s.WEIGHT_DECAY,
    )


def lr_multiplier_config(cfg: CfgNode) -> Any:
    """The lr multiplier of ``SOLVER.LR_SCHEDULER_NAME`` with warmup, a function of training progress."""
    from fvcore.common.param_scheduler import (
        CosineParamScheduler,
        MultiStepParamScheduler,
        StepWithFixedGammaParamScheduler,
    )

    from libdet.solver import WarmupParamScheduler

    s = cfg.SOLVER
    name = s.LR_SCHEDULER_NAME
    if name == "WarmupMultiStepLR":
        # a step at or after the last iteration never takes effect
        steps = [x for x in s.STEPS if x < s.MAX_ITER]
        if len(steps) != len(s.STEPS):
            logger.warning(f"SOLVER.STEPS {list(s.STEPS)} has steps at or after SOLVER.MAX_ITER; ignoring them.")
        scheduler = L(MultiStepParamScheduler)(
            values=[s.GAMMA**k for k in range(len(steps) + 1)], milestones=steps, num_updates=s.MAX_ITER
        )
    elif name == "WarmupCosineLR":
        end_value = s.BASE_LR_END / s.BASE_LR if s.BASE_LR else 0.0
        scheduler = L(CosineParamScheduler)(start_value=1.0, end_value=end_value)
    elif name == "WarmupStepWithFixedGammaLR":
        scheduler = L(StepWithFixedGammaParamScheduler)(
            base_value=1.0, gamma=s.GAMMA, num_decays=s.NUM_DECAYS, num_updates=s.MAX_ITER
        )
    else:
        raise ValueError(
            f"SOLVER.LR_SCHEDULER_NAME={name!r}: expected 'WarmupMultiStepLR', 'WarmupCosineLR' or "
            "'WarmupStepWithFixedGammaLR'."
        )
    return L(WarmupParamScheduler)(
        scheduler=scheduler,
        warmup_factor=s.WARMUP_FACTOR,
        warmup_length=min(s.WARMUP_ITERS / s.MAX_ITER, 1.0) if s.MAX_ITER > 0 else 0.0,
        warmup_method=s.WARMUP_METHOD,
        rescale_interval=s.RESCALE_INTERVAL,
    )


def train_config(cfg: CfgNode) -> dict[str, Any]:
    """The ``train`` section (see ``configs/common/train.py``) from ``OUTPUT_DIR``, ``MODEL.WEIGHTS``, ``SOLVER``,
    ``TEST.EVAL_PERIOD``, ``SEED`` and ``CUDNN_BENCHMARK``."""
    from libdet.solver.build import GradientClipping

    s = cfg.SOLVER
    clip = s.CLIP_GRADIENTS
    transforms = [L(GradientClipping)(clip_type=clip.CLIP_TYPE, clip_value=clip.CLIP_VALUE, norm_type=clip.NORM_TYPE)]
    return dict(
        output_dir=cfg.OUTPUT_DIR,
        init_checkpoint=cfg.MODEL.WEIGHTS,
        max_iter=s.MAX_ITER,
        amp=dict(enabled=bool(s.AMP.ENABLED), precision="float16"),
        ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
        checkpointer=dict(period=s.CHECKPOINT_PERIOD, max_to_keep=100),
        eval_period=cfg.TEST.EVAL_PERIOD,
        log_period=20,
        smoothing_window=20,
        device=yaml_device(cfg),
        seed=cfg.SEED,
        cudnn_benchmark=cfg.CUDNN_BENCHMARK,
        ema=dict(enabled=False, decay=0.9998),
        best_checkpointer=dict(val_metric=None, mode="max"),
        early_stopping=dict(metric=None, mode="max", patience=3, min_delta=0.0),
        grad_transforms=transforms if clip.ENABLED else [],
        grad_accumulation_steps=1,
    )


def translate_config(cfg: CfgNode) -> DictConfig:
    """The lazy config equivalent to YAML config ``cfg``: ``model``, ``dataloader`` (``train`` and, when
    ``DATASETS.TEST`` is set, ``test`` / ``evaluator`` for its first dataset), ``optimizer``, ``lr_multiplier``,
    ``train``.

    Example::

        cfg = get_cfg(); cfg.merge_from_file("mask_rcnn_R_50_FPN_3x.yaml")
        lazy = translate_config(cfg)
        model = instantiate(lazy.model)
    """
    from .yaml_model import model_config

    if not isinstance(cfg, CfgNode):
        raise TypeError(f"translate_config: expected a CfgNode (from get_cfg()), got {type(cfg).__name__}.")
    dataloader: dict[str, Any] = {}
    if len(cfg.DATASETS.TRAIN):
        dataloader["train"] = train_loader_config(cfg)
    if len(cfg.DATASETS.TEST):
        name = cfg.DATASETS.TEST[0]
        dataloader["test"] = test_loader_config(cfg, name)
        dataloader["evaluator"] = evaluator_config(cfg, name)
    return as_config(
        {
            "model": model_config(cfg),
            "dataloader": dataloader,
            "optimizer": optimizer_config(cfg),
            "lr_multiplier": lr_multiplier_config(cfg),
            "train": train_config(cfg),
        }
    )


def _call_node(node: Any, **overrides: Any) -> Any:
    """Call the ``_target_`` of lazy node ``node`` with its arguments instantiated, ``overrides`` replacing some
    (objects such as a user's mapper are passed as they are)."""
    from .instantiate import instantiate

    kwargs = {k: instantiate(v) for k, v in node.items() if k != "_target_" and k not in overrides}
    return node["_target_"](**kwargs, **overrides)


def yaml_config_entry(handler: Any) -> Any:
    """Decorate a libdet builder so that detectron2's call with a YAML config as first argument goes to
    ``handler(cfg, *args, **kwargs)`` (which translates the config and calls the builder with plain arguments);
    every other call reaches the builder unchanged."""
    import functools

    def decorator(func: Any) -> Any:
        @functools.wraps(func)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if args and isinstance(args[0], CfgNode):
                return handler(*args, **kwargs)
            return func(*args, **kwargs)

        return wrapped

    return decorator


def train_loader_from_yaml(cfg: CfgNode, mapper: Any = None, **overrides: Any) -> Any:
    """detectron2's ``build_detection_train_loader(cfg, mapper=None, *, dataset=None, sampler=None, ...)``."""
    node = train_loader_config(cfg)
    if mapper is not None:
        overrides["mapper"] = mapper
    return _call_node(node, **{k: v for k, v in overrides.items() if v is not None})


def test_loader_from_yaml(cfg: CfgNode, dataset_name: Any = None, mapper: Any = None, **overrides: Any) -> Any:
    """detectron2's ``build_detection_test_loader(cfg, dataset_name, mapper=None, ...)``."""
    if isinstance(dataset_name, (list, tuple)):
        if len(dataset_name) != 1:
            raise ValueError(f"build_detection_test_loader(cfg, {dataset_name!r}): give one dataset name.")
        dataset_name = dataset_name[0]
    node = test_loader_config(cfg, dataset_name)
    if mapper is not None:
        overrides["mapper"] = mapper
    return _call_node(node, **{k: v for k, v in overrides.items() if v is not None})


def predictor_kwargs(cfg: CfgNode) -> dict[str, Any]:
    """Arguments of ``DefaultPredictor`` for YAML config ``cfg``: the model (built, weights from ``MODEL.WEIGHTS``
    loaded, on ``MODEL.DEVICE``), the test sizes, the input format and the metadata of ``DATASETS.TEST[0]``."""
    from libdet.checkpoint import DetectionCheckpointer
    from libdet.data import MetadataCatalog
    from libdet.modeling.meta_arch.build import build_model

    if cfg.INPUT.FORMAT not in ("BGR", "RGB"):
        raise ValueError(f"DefaultPredictor: INPUT.FORMAT must be 'BGR' or 'RGB', got {cfg.INPUT.FORMAT!r}.")
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return dict(
        model=model,
        min_size_test=cfg.INPUT.MIN_SIZE_TEST,
        max_size_test=cfg.INPUT.MAX_SIZE_TEST,
        input_format=cfg.INPUT.FORMAT,
        metadata=MetadataCatalog.get(cfg.DATASETS.TEST[0]) if len(cfg.DATASETS.TEST) else None,
    )

"""Active learning on the shapes set: does mining pick better images to label than chance?

Usage::

    python benchmarks/active_learning.py                       # 100 labelled + 100 mined, 400 candidates
    python benchmarks/active_learning.py --iters 150 --pool 200 # a quicker, noisier run

1. Train the CPU quickstart recipe (``configs/shapes/mask_rcnn_cpu.py``) on ``--labelled`` images of
   ``shapes_train`` (a seeded random subset) and evaluate it on ``shapes_val``.
2. Score ``--pool`` other training images with each mining algorithm of the YMIR executor
   (``tools/ymir/ymir_mining.py``: CALD, entropy) using that model, plus the random baseline.
3. For each algorithm, add its ``--add`` top-scored images to the labelled set, train again from scratch with the
   same schedule, and evaluate. Prints box/mask AP per algorithm and the time each mining pass took.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tools" / "ymir"))

from ymir_mining import mine  # noqa: E402

from libdet.checkpoint import DetectionCheckpointer  # noqa: E402
from libdet.config import LazyConfig, instantiate  # noqa: E402
from libdet.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from libdet.data.detection_utils import read_image  # noqa: E402
from libdet.engine import BatchPredictor  # noqa: E402
from libdet.engine.training import do_train  # noqa: E402


def _register_subset(name: str, dicts: list[dict]) -> None:
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])
    MetadataCatalog.get(name).set(**MetadataCatalog.get("shapes_train").as_dict() | {"name": name})


def _train(config: str, dataset: str, iters: int, output_dir: str) -> tuple[dict, object]:
    cfg = LazyConfig.load(config)
    cfg.dataloader.train.dataset.names = dataset
    cfg.train.max_iter = iters
    cfg.train.output_dir = output_dir
    cfg.train.checkpointer.period = iters
    cfg.train.eval_period = 0
    results = do_train(cfg)
    return {k: results.get(k, float("nan")) for k in ("bbox/AP", "segm/AP")}, cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO_ROOT / "configs/shapes/mask_rcnn_cpu.py"))
    parser.add_argument("--labelled", type=int, default=100)
    parser.add_argument("--add", type=int, default=100)
    parser.add_argument("--pool", type=int, default=400)
    parser.add_argument("--iters", type=int, default=400, help="training iterations of every round")
    parser.add_argument("--algorithms", nargs="+", default=["cald", "entropy", "random"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="output/active_learning")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    dicts = DatasetCatalog.get("shapes_train")
    order = np.random.default_rng(args.seed).permutation(len(dicts))
    labelled = [dicts[i] for i in order[: args.labelled]]
    pool = [dicts[i] for i in order[args.labelled : args.labelled + args.pool]]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(labelled)} labelled, {len(pool)} pool")

    _register_subset("al_round0", labelled)
    t0 = time.perf_counter()
    base, cfg = _train(args.config, "al_round0", args.iters, os.path.join(args.output, "round0"))
    print(
        f"round 0 ({len(labelled)} images): box AP {base['bbox/AP']:.1f}, mask AP {base['segm/AP']:.1f} "
        f"({time.perf_counter() - t0:.0f} s)"
    )

    model = instantiate(cfg.model)
    DetectionCheckpointer(model).load(os.path.join(args.output, "round0", "model_final.pth"))
    aug = cfg.dataloader.test.mapper.augmentations[0]
    predictor = BatchPredictor(model, min_size_test=int(np.max(aug.short_edge_length)), max_size_test=aug.max_size)
    images = [read_image(d["file_name"], format="BGR") for d in pool]

    rows = []
    for algorithm in args.algorithms:
        t0 = time.perf_counter()
        with torch.no_grad():
            scores = mine(algorithm, lambda ims: [o["instances"] for o in predictor(list(ims))], images, seed=args.seed)
        mining_s = time.perf_counter() - t0
        chosen = [pool[i] for i in np.argsort(-np.asarray(scores), kind="stable")[: args.add]]
        _register_subset(f"al_{algorithm}", labelled + chosen)
        result, _ = _train(args.config, f"al_{algorithm}", args.iters, os.path.join(args.output, algorithm))
        rows.append((algorithm, result["bbox/AP"], result["segm/AP"], mining_s))
        print(
            f"{algorithm:>8}: box AP {result['bbox/AP']:.1f}, mask AP {result['segm/AP']:.1f} (mining {mining_s:.0f} s)"
        )

    print("\n| labelled set | box AP | mask AP | mining time |\n|---|---|---|---|")
    print(f"| {len(labelled)} random (round 0) | {base['bbox/AP']:.1f} | {base['segm/AP']:.1f} | |")
    for algorithm, box_ap, mask_ap, mining_s in rows:
        print(f"| +{args.add} by {algorithm} | {box_ap:.1f} | {mask_ap:.1f} | {mining_s:.0f} s |")


if __name__ == "__main__":
    main()

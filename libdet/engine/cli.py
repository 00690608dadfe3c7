"""The command line shared by libdet's training scripts (detectron2's ``default_argument_parser``)."""

from __future__ import annotations

import argparse

__all__ = ["default_argument_parser"]


def default_argument_parser(epilog: str | None = None) -> argparse.ArgumentParser:
    """The command line of libdet's training scripts.

    ``opts`` collects everything after the named options as config overrides (``train.max_iter=10
    model.roi_heads.num_classes=5``), applied with :meth:`LazyConfig.apply_overrides`.
    """
    parser = argparse.ArgumentParser(
        epilog=epilog
        or """
Examples:

Run on a single machine:
    $ %(prog)s --num-gpus 8 --config-file cfg.py

Change some config options:
    $ %(prog)s --config-file cfg.py train.max_iter=100 optimizer.lr=0.001

Run on multiple machines:
    (machine0)$ %(prog)s --machine-rank 0 --num-machines 2 --dist-url <URL> [--other-flags]
    (machine1)$ %(prog)s --machine-rank 1 --num-machines 2 --dist-url <URL> [--other-flags]
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to the config file")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="resume from the last checkpoint in the output directory when there is one; otherwise start from "
        "train.init_checkpoint",
    )
    parser.add_argument("--eval-only", action="store_true", help="only evaluate")
    parser.add_argument("--num-gpus", type=int, default=1, help="number of processes (GPUs) per machine")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)")
    parser.add_argument(
        "--dist-url",
        default="auto",
        help="initialisation URL for torch.distributed; 'auto' picks a free local port (single machine only)",
    )
    parser.add_argument(
        "opts",
        default=None,
        nargs=argparse.REMAINDER,
        help="config overrides 'path.key=value' at the end of the command (see LazyConfig.apply_overrides)",
    )
    return parser

#!/usr/bin/env python
"""libdet's YMIR executor: the image's entry point (``python tools/ymir/start.py``).

Reads ``env.yaml`` (``$DEFAULT_ENV_FILE_PATH``, else ``/in/env.yaml``) and ``config.yaml``, then runs training,
or mining and/or infer (mining first: it fills the first half of the progress bar). A failure is written to the
monitor file as the error state with the SDK's return code (config, dataset, image, model, NaN loss, ...), logged
with the file or value at fault, and the process exits with status 1.

The file formats are in ``ymir_protocol.py``; the hyper-parameters in ``img-man/*-template.yaml``.
"""

from __future__ import annotations

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the executor's modules sit beside this file

from ymir_predict import run_infer, run_mining  # noqa: E402
from ymir_protocol import Monitor, ReturnCode, YmirError, load_env, load_executor_config  # noqa: E402

logger = logging.getLogger("libdet.ymir")


def main(env_file: str | None = None) -> int:
    """Run the tasks ``env.yaml`` asks for; returns the process exit status (0 on success)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s [%(asctime)s] %(name)s: %(message)s")
    monitor = None
    try:
        env = load_env(env_file)
        monitor = Monitor(env)
        monitor.progress("training" if env.run_training else "mining", 0.0)
        config = load_executor_config(env)
        if env.run_training:
            from ymir_train import run_training  # the training stack is not needed by mining or infer

            run_training(env, config, monitor)
        else:
            if not (env.run_mining or env.run_infer):
                raise YmirError(ReturnCode.CONFIG, f"{env.path}: none of run_training, run_mining, run_infer is true.")
            if env.run_mining:
                run_mining(env, config, monitor)
            if env.run_infer:
                run_infer(env, config, monitor)
    except YmirError as e:
        logger.error(f"YMIR task failed ({e.return_code.name}, {int(e.return_code)}): {e}")
        if monitor is not None:
            monitor.error(e.return_code, monitor.last_percent())
        return 1
    except Exception as e:
        code = ReturnCode.OUT_OF_MEMORY if isinstance(e, MemoryError | _cuda_oom()) else ReturnCode.CONTAINER
        logger.exception(f"YMIR task failed ({code.name}, {int(code)}): {type(e).__name__}: {e}")
        if monitor is not None:
            monitor.error(code, monitor.last_percent())
        return 1
    return 0


def _cuda_oom() -> type:
    import torch

    return torch.cuda.OutOfMemoryError


if __name__ == "__main__":
    sys.exit(main())

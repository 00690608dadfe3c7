"""The evaluator interface and the loop that runs a model over a dataset and feeds an evaluator."""

from __future__ import annotations

import contextlib
import datetime
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from libdet.utils import comm
from libdet.utils.logger import log_every_n_seconds

__all__ = ["DatasetEvaluator", "DatasetEvaluators", "inference_on_dataset", "inference_context"]

logger = logging.getLogger(__name__)

_CALLBACK_NAMES = ("on_start", "before_inference", "after_inference", "on_end")


class DatasetEvaluator:
    """Base class of evaluators: accumulate (input, output) pairs, then compute metrics.

    ``inference_on_dataset`` calls ``reset()`` once, ``process(inputs, outputs)`` for every batch and
    ``evaluate()`` at the end. In distributed runs ``evaluate()`` should gather what every process
    accumulated and return the results on the main process only (``{}`` or ``None`` elsewhere).
    """

    def reset(self) -> None:
        """Prepare for a new round of evaluation (drop everything accumulated so far)."""

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        """Accumulate one batch.

        Args:
            inputs: the model's inputs of the batch (dataset dicts, e.g. with ``"image_id"``).
            outputs: the model's outputs, one dict per input.
        """

    def evaluate(self) -> dict | None:
        """Compute the metrics of everything processed since ``reset()``.

        Returns:
            ``{task: {metric: value}}`` (e.g. ``{"bbox": {"AP": 40.1}}``) on the main process.
        """
        return None


class DatasetEvaluators(DatasetEvaluator):
    """Runs several evaluators as one; their results are merged (task names must not collide)."""

    def __init__(self, evaluators: Iterable[DatasetEvaluator]):
        """
        Args:
            evaluators: the evaluators to run together.
        """
        super().__init__()
        self._evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> dict:
        results: dict = OrderedDict()
        for evaluator in self._evaluators:
            result = evaluator.evaluate()
            if comm.is_main_process() and result is not None:
                for key, value in result.items():
                    if key in results:
                        raise ValueError(
                            f"DatasetEvaluators: two evaluators returned results for the same task {key!r} "
                            f"(the second is {type(evaluator).__name__})."
                        )
                    results[key] = value
        return results


@contextlib.contextmanager
def inference_context(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode inside the block and restore its previous training mode afterwards.

    Args:
        model: the module whose ``training`` flag is switched (submodules follow ``model.eval()``).
    """
    training_mode = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training_mode)


def _check_callbacks(callbacks: Mapping[str, Callable[[], Any]] | None) -> dict[str, Callable[[], Any]]:
    if callbacks is None:
        return {}
    unknown = sorted(set(callbacks) - set(_CALLBACK_NAMES))
    if unknown:
        raise ValueError(f"inference_on_dataset: unknown callbacks {unknown}; expected keys among {_CALLBACK_NAMES}.")
    for name, func in callbacks.items():
        if not callable(func):
            raise TypeError(f"inference_on_dataset: callbacks[{name!r}] must be callable, got {type(func).__name__}.")
    return dict(callbacks)


def _seconds_to_str(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


def inference_on_dataset(
    model: nn.Module | Callable[[list[dict]], list[dict]],
    data_loader: Iterable[list[dict]],
    evaluator: DatasetEvaluator | Iterable[DatasetEvaluator] | None,
    callbacks: Mapping[str, Callable[[], Any]] | None = None,
) -> dict | None:
    """Run ``model`` on every batch of ``data_loader`` under ``torch.inference_mode()`` and evaluate.

    The model is put in eval mode for the duration (``inference_context``) and its mode restored.
    Timing excludes the first ``min(5, len - 1)`` warm-up iterations; a progress/ETA line is logged at
    most every 5 seconds. In distributed runs every process runs its own shard and ``evaluator``
    gathers in ``evaluate()``.

    Args:
        model: a module or callable mapping a batch (list of dicts) to a list of output dicts.
        data_loader: an iterable of batches; ``len(data_loader)`` is used when available.
        evaluator: an evaluator, an iterable of evaluators (wrapped in ``DatasetEvaluators``), or
            ``None`` to only run (and time) the model.
        callbacks: optional ``{"on_start", "before_inference", "after_inference", "on_end"}`` ->
            zero-argument callables, called around the loop and around each model call.

    Returns:
        The evaluator's results (``{}`` for no evaluator or on non-main processes).
    """
    callbacks = _check_callbacks(callbacks)
    num_devices = comm.get_world_size()
    try:
        total = len(data_loader)  # type: ignore[arg-type]
    except TypeError:
        total = None
    logger.info(f"Start inference on {total if total is not None else 'an unknown number of'} batches")

    if evaluator is None:
        evaluator = DatasetEvaluators([])
    elif not isinstance(evaluator, DatasetEvaluator):
        evaluator = DatasetEvaluators(evaluator)
    evaluator.reset()

    num_warmup = min(5, total - 1) if total else 5
    sync_cuda = torch.cuda.is_available()  # asked once: it costs more than the rest of the per-batch bookkeeping
    total_data_time = total_compute_time = total_eval_time = 0.0
    num_images = num_timed_images = 0
    idx = -1
    with contextlib.ExitStack() as stack:
        if isinstance(model, nn.Module):
            stack.enter_context(inference_context(model))
        stack.enter_context(torch.inference_mode())

        if "on_start" in callbacks:
            callbacks["on_start"]()
        start_time = time.perf_counter()
        start_data_time = time.perf_counter()
        for idx, inputs in enumerate(data_loader):
            data_time = time.perf_counter() - start_data_time
            if idx == num_warmup:
                start_time = time.perf_counter()
                total_data_time = total_compute_time = total_eval_time = 0.0
                num_timed_images = 0
            timed = idx >= num_warmup

            start_compute_time = time.perf_counter()
            if "before_inference" in callbacks:
                callbacks["before_inference"]()
            outputs = model(inputs)
            if "after_inference" in callbacks:
                callbacks["after_inference"]()
            if sync_cuda:
                torch.cuda.synchronize()
            compute_time = time.perf_counter() - start_compute_time

            start_eval_time = time.perf_counter()
            evaluator.process(inputs, outputs)
            eval_time = time.perf_counter() - start_eval_time

            batch_size = len(inputs) if hasattr(inputs, "__len__") else 1
            num_images += batch_size
            if timed:
                total_data_time += data_time
                total_compute_time += compute_time
                total_eval_time += eval_time
                num_timed_images += batch_size
                iters_after_start = idx + 1 - num_warmup
                if total is not None:
                    seconds_per_iter = (time.perf_counter() - start_time) / iters_after_start
                    eta = seconds_per_iter * (total - idx - 1)
                    log_every_n_seconds(
                        logging.INFO,
                        f"Inference done {idx + 1}/{total}. Dataloading: {total_data_time / iters_after_start:.4f} "
                        f"s/iter. Inference: {total_compute_time / iters_after_start:.4f} s/iter. Eval: "
                        f"{total_eval_time / iters_after_start:.4f} s/iter. Total: {seconds_per_iter:.4f} "
                        f"s/iter. ETA={_seconds_to_str(eta)}",
                        n=5,
                        name=__name__,
                    )
            start_data_time = time.perf_counter()
        if "on_end" in callbacks:
            callbacks["on_end"]()

    num_batches = idx + 1
    if num_batches == 0:
        logger.warning("inference_on_dataset: the data loader is empty; nothing was evaluated.")
    else:
        total_time = time.perf_counter() - start_time
        timed_iters = num_batches - min(num_warmup, num_batches)
        if timed_iters > 0 and num_timed_images > 0:
            logger.info(
                f"Total inference time: {_seconds_to_str(total_time)} ({total_time / num_timed_images:.6f} s / img "
                f"per device, on {num_devices} devices; {num_images} images, {num_batches} batches, "
                f"{min(num_warmup, num_batches)} warm-up batches not timed)"
            )
            logger.info(
                f"Total inference pure compute time: {_seconds_to_str(total_compute_time)} "
                f"({total_compute_time / num_timed_images:.6f} s / img per device, on {num_devices} devices); "
                f"data time {total_data_time / num_timed_images:.6f} s / img; "
                f"eval time {total_eval_time / num_timed_images:.6f} s / img"
            )
        else:
            logger.info(f"Inference on {num_images} images done (all {num_batches} batches were warm-up, not timed)")

    results = evaluator.evaluate()
    # An evaluator may return None on non-main processes; callers index the result, so give them a dict.
    if results is None:
        results = {}
    return results

"""Inference on raw images with a built model: :class:`DefaultPredictor` (one image). Many images:
:class:`~libdet.engine.batch_predictor.BatchPredictor`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from libdet.data.transforms import ResizeShortestEdge

__all__ = ["DefaultPredictor"]


class DefaultPredictor:
    """Run a built model on one image: resize to the test size, convert channels, forward, results at input size.

    Args:
        model: a built libdet model (e.g. ``GeneralizedRCNN``) with weights loaded; put in eval mode. Or, as in
            detectron2, a YAML config (``CfgNode``): the model is built from it and ``MODEL.WEIGHTS`` loaded.
        min_size_test: shorter side the image is resized to.
        max_size_test: upper bound on the longer side after resizing.
        input_format: channel order the *model* expects (``"BGR"`` or ``"RGB"``); as in detectron2, images
            given to the predictor are BGR (what ``cv2.imread`` / ``read_image(format="BGR")`` return) and
            are flipped for an RGB model.
        metadata: the dataset's metadata (class names, ...), kept for visualisation.

    Example::

        pred = DefaultPredictor(model, input_format="BGR")
        outputs = pred(cv2.imread("input.jpg"))  # {"instances": Instances} in the image's own size
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        min_size_test: int = 800,
        max_size_test: int = 1333,
        input_format: str = "BGR",
        metadata: Any = None,
    ) -> None:
        from libdet.config import CfgNode

        if isinstance(model, CfgNode):  # detectron2's DefaultPredictor(cfg): built from the translated config
            from libdet.config.yaml_translate import predictor_kwargs

            self.cfg = model.clone()
            self.__init__(**predictor_kwargs(model))
            return
        if input_format not in ("BGR", "RGB"):
            raise ValueError(f"{type(self).__name__}: input_format must be 'BGR' or 'RGB', got {input_format!r}.")
        self.model = model.eval()
        self.input_format = input_format
        self.metadata = metadata
        self.aug = ResizeShortestEdge([min_size_test, min_size_test], max_size_test)

    def _prepare(self, original_image: np.ndarray, index: int = 0) -> dict[str, Any]:
        """One model input dict ``{"image": (3, H', W') tensor, "height": H, "width": W}``."""
        if not isinstance(original_image, np.ndarray) or original_image.ndim != 3 or original_image.shape[2] != 3:
            shape = getattr(original_image, "shape", type(original_image).__name__)
            raise ValueError(f"{type(self).__name__}: image {index} must be an (H, W, 3) numpy array, got {shape}.")
        if self.input_format == "RGB":
            original_image = np.ascontiguousarray(original_image[:, :, ::-1])
        height, width = original_image.shape[:2]
        image = self.aug.get_transform(original_image).apply_image(original_image)
        image = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return {"image": image, "height": height, "width": width}

    def __call__(self, original_image: np.ndarray) -> dict[str, Any]:
        """Predict on one ``(H, W, 3)`` BGR image.

        Returns:
            The model's output for the image, e.g. ``{"instances": Instances}`` with boxes in ``(H, W)`` pixels.
        """
        with torch.no_grad():
            return self.model([self._prepare(original_image)])[0]

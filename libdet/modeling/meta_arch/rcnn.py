"""R-CNN meta-architectures: ``GeneralizedRCNN`` (backbone -> proposal generator -> ROI heads) and
``ProposalNetwork`` (backbone -> proposal generator only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from libdet.data.detection_utils import convert_image_to_rgb
from libdet.layers import move_device_like
from libdet.structures import ImageList, Instances
from libdet.utils.events import get_event_storage
from libdet.utils.visualizer import Visualizer

from ..postprocessing import detector_postprocess

__all__ = ["GeneralizedRCNN", "ProposalNetwork"]


def _check_pixel_stats(owner: str, pixel_mean: torch.Tensor, pixel_std: torch.Tensor) -> None:
    if pixel_mean.shape != pixel_std.shape:
        raise ValueError(
            f"{owner}: `pixel_mean` {tuple(pixel_mean.shape)} and `pixel_std` {tuple(pixel_std.shape)} must "
            "have the same shape (one value per input channel)."
        )


def _image_to_rgb(image: torch.Tensor, input_format: str | None):
    """A model input ``(C, H, W)`` tensor (0-255, channels in ``input_format``) as an ``(H, W, 3)`` uint8 RGB
    array for drawing. ``None`` is taken as RGB."""
    if input_format not in (None, "RGB", "BGR", "L"):
        raise ValueError(
            f"GeneralizedRCNN.visualize_training: cannot draw images of input_format={input_format!r}; "
            "supported: 'BGR', 'RGB', 'L' or None (RGB). Set vis_period=0 to disable training visualisation."
        )
    img = image.detach().to("cpu", torch.float32).clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return convert_image_to_rgb(img, input_format or "RGB")


class _ImageNormalizer(nn.Module):
    """Holds ``pixel_mean`` / ``pixel_std`` as non-persistent buffers and builds the normalised,
    padded :class:`ImageList` of a batch. Not a public class: the meta-architectures below use it."""

    def _register_pixel_stats(self, owner: str, pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> None:
        mean = torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1)
        _check_pixel_stats(owner, mean, std)
        # Not persistent: detectron2 checkpoints carry no pixel statistics, configs do.
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    @property
    def device(self) -> torch.device:
        """Device of the model (of its ``pixel_mean`` buffer)."""
        return self.pixel_mean.device

    def _move_to_current_device(self, x: torch.Tensor) -> torch.Tensor:
        return move_device_like(x, self.pixel_mean)

    def _normalized_images(self, batched_inputs: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        if torch.jit.is_scripting():  # scripted models (inputs hold tensors only): no checks, whose messages
            # TorchScript cannot build
            return [
                (self._move_to_current_device(x["image"]) - self.pixel_mean) / self.pixel_std for x in batched_inputs
            ]
        images = []
        for i, x in enumerate(batched_inputs):
            if "image" not in x:
                raise ValueError(f"{type(self).__name__}: batched_inputs[{i}] has no 'image' key.")
            image = self._move_to_current_device(x["image"])
            if image.dim() != 3 or image.shape[0] != self.pixel_mean.shape[0]:
                raise ValueError(
                    f"{type(self).__name__}: batched_inputs[{i}]['image'] must be (C, H, W) with "
                    f"C={self.pixel_mean.shape[0]} channels, got {tuple(image.shape)}."
                )
            images.append((image - self.pixel_mean) / self.pixel_std)
        return images

    def _gt_instances(self, batched_inputs: list[dict[str, Any]]) -> list[Instances] | None:
        if "instances" not in batched_inputs[0]:
            return None
        for i, x in enumerate(batched_inputs):
            if "instances" not in x:
                raise ValueError(
                    f"{type(self).__name__}: batched_inputs[0] has 'instances' but batched_inputs[{i}] does not."
                )
        return [x["instances"].to(self.device) for x in batched_inputs]


class GeneralizedRCNN(_ImageNormalizer):
    """A two-stage detector: per-image feature extraction, region proposals, per-region predictions.

    Inputs are lists of dicts (one per image) with ``"image"`` (``(C, H, W)`` tensor in ``input_format``,
    0-255), optionally ``"instances"`` (ground truth, training), ``"proposals"`` (precomputed proposals
    when there is no proposal generator), ``"height"``/``"width"`` (output resolution).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        proposal_generator: nn.Module | None,
        roi_heads: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str | None = None,
        vis_period: int = 0,
    ):
        """
        Args:
            backbone: a :class:`Backbone` (``forward -> dict[str, Tensor]``, ``size_divisibility``,
                ``padding_constraints``).
            proposal_generator: e.g. :class:`RPN`; ``None`` to read precomputed ``"proposals"``.
            roi_heads: e.g. :class:`StandardROIHeads`.
            pixel_mean, pixel_std: per-channel normalisation of the input images.
            input_format: channel order of the input images (``"BGR"``, ``"RGB"``); informational.
            vis_period: every ``vis_period`` training iterations (of the active event storage), put an image
                of the first image's ground-truth boxes next to its top proposals into the event storage
                (see :meth:`visualize_training`); 0 disables it.
        """
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        self.input_format = input_format
        if not isinstance(vis_period, int) or isinstance(vis_period, bool) or vis_period < 0:
            raise ValueError(f"GeneralizedRCNN: `vis_period` must be an int >= 0 (0 disables it), got {vis_period!r}.")
        self.vis_period = vis_period
        self._register_pixel_stats("GeneralizedRCNN", pixel_mean, pixel_std)

    def forward(self, batched_inputs: list[dict[str, torch.Tensor]]):
        """Training: :meth:`forward_training` (a dict of losses). Inference: :meth:`inference` (per image,
        ``{"instances": Instances}`` at the requested ``height`` x ``width``).

        ``batched_inputs`` is annotated for TorchScript (:func:`libdet.export.scripting_with_instances`),
        where the dicts hold tensors only; scripted models are run with
        ``inference(batched_inputs, do_postprocess=False)``, as in detectron2."""
        if self.training:
            return self.forward_training(batched_inputs)
        return self.inference(batched_inputs)

    def forward_training(self, batched_inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Losses of the proposal generator and the ROI heads on a batch with ``"instances"``.

        Raises:
            ValueError: if the batch has no ground truth ``"instances"``.
        """
        images = self.preprocess_image(batched_inputs)
        gt_instances = self._gt_instances(batched_inputs)
        if gt_instances is None:
            raise ValueError("GeneralizedRCNN: training needs ground truth under batched_inputs[i]['instances'].")
        features = self.backbone(images.tensor)
        proposals, proposal_losses = self._proposals(batched_inputs, images, features, gt_instances)
        self._maybe_visualize_training(batched_inputs, proposals)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        losses: dict[str, torch.Tensor] = {}
        losses.update(detector_losses)
        losses.update(proposal_losses)
        return losses

    def _maybe_visualize_training(self, batched_inputs: list[dict[str, Any]], proposals: list[Instances]) -> None:
        """:meth:`visualize_training` every ``vis_period`` iterations of the event storage."""
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)

    def visualize_training(self, batched_inputs: list[dict[str, Any]], proposals: list[Instances]) -> None:
        """Put into the active event storage one image, ``"Left: GT bounding boxes;  Right: Predicted
        proposals"``: the first image of the batch with its ground-truth boxes (left) and its top-scoring
        proposals (right, at most 20), side by side as a ``(3, H, 2W)`` float RGB tensor in ``[0, 1]``.

        Args:
            batched_inputs: the training batch (``"image"`` ``(C, H, W)`` in ``input_format``, ``"instances"``
                with ``gt_boxes``).
            proposals: per image, :class:`Instances` with ``proposal_boxes`` (sorted by objectness, as the
                proposal generator returns them) in the coordinates of ``"image"``.

        Raises:
            RuntimeError: outside an :class:`~libdet.utils.events.EventStorage` context.
        """
        storage = get_event_storage()
        max_vis_prop = 20
        for inputs, prop in zip(batched_inputs, proposals):
            img = _image_to_rgb(inputs["image"], self.input_format)
            anno_img = Visualizer(img, None).overlay_instances(boxes=inputs["instances"].gt_boxes).get_image()
            boxes = prop.proposal_boxes[: min(len(prop), max_vis_prop)]
            prop_img = Visualizer(img, None).overlay_instances(boxes=boxes).get_image()
            vis_img = np.concatenate((anno_img, prop_img), axis=1).transpose(2, 0, 1)
            vis_name = "Left: GT bounding boxes;  Right: Predicted proposals"
            storage.put_image(vis_name, torch.from_numpy(np.ascontiguousarray(vis_img)).float() / 255.0)
            break  # only the first image of the batch

    def _proposals(self, batched_inputs, images, features, gt_instances):
        if self.proposal_generator is not None:
            return self.proposal_generator(images, features, gt_instances)
        for i, x in enumerate(batched_inputs):
            if "proposals" not in x:
                raise ValueError(
                    f"GeneralizedRCNN: without a proposal generator batched_inputs[{i}] needs 'proposals'."
                )
        return [x["proposals"].to(self.device) for x in batched_inputs], {}

    def inference(
        self,
        batched_inputs: list[dict[str, torch.Tensor]],
        detected_instances: list[Instances] | None = None,
        do_postprocess: bool = True,
    ) -> list[dict[str, Instances]] | list[Instances]:
        """Detect objects (model in eval mode).

        Args:
            batched_inputs: see the class docstring.
            detected_instances: per image, known detections (``pred_boxes``, ``pred_classes``); if given,
                only the non-box branches (e.g. masks) are run on them.
            do_postprocess: rescale the results to each input's ``height`` x ``width`` (default: the
                input image size) and paste masks; otherwise return raw :class:`Instances` at the
                network input resolution.

        Returns:
            per image, ``{"instances": Instances}`` (or the raw :class:`Instances`).
        """
        if self.training:
            raise RuntimeError("GeneralizedRCNN.inference needs the model in eval mode (model.eval()).")
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        if detected_instances is None:
            if torch.jit.is_scripting():  # scripted: proposals from the proposal generator only
                if self.proposal_generator is None:
                    raise NotImplementedError("scripting: GeneralizedRCNN without a proposal generator.")
                proposals, _ = self.proposal_generator(images, features, None)
            else:
                proposals, _ = self._proposals(batched_inputs, images, features, None)
            results, _ = self.roi_heads(images, features, proposals, None)
        else:
            detected_instances = [x.to(self.device) for x in detected_instances]
            results = self.roi_heads.forward_with_given_boxes(features, detected_instances)
        if do_postprocess:
            if torch.jit.is_scripting():  # as in detectron2: detector_postprocess runs in Python
                raise NotImplementedError(
                    "scripted GeneralizedRCNN: call inference(batched_inputs, do_postprocess=False), then "
                    "libdet.modeling.postprocessing.detector_postprocess on each result."
                )
            return GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)
        return results

    def preprocess_image(self, batched_inputs: list[dict[str, torch.Tensor]]) -> ImageList:
        """Normalise the images and pad them into an :class:`ImageList` as the backbone requires."""
        return ImageList.from_tensors(
            self._normalized_images(batched_inputs),
            self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        )

    @staticmethod
    def _postprocess(
        instances: list[Instances], batched_inputs: list[dict[str, Any]], image_sizes: list[tuple[int, int]]
    ) -> list[dict[str, Instances]]:
        """Rescale each image's results to its requested output size (``height``/``width`` of the input,
        default: the network input size)."""
        processed = []
        for result, x, size in zip(instances, batched_inputs, image_sizes):
            height = x.get("height", size[0])
            width = x.get("width", size[1])
            processed.append({"instances": detector_postprocess(result, height, width)})
        return processed


class ProposalNetwork(_ImageNormalizer):
    """A proposal-only model: backbone + proposal generator. Returns losses in training and, at inference,
    per image ``{"proposals": Instances}`` rescaled to the requested output size."""

    def __init__(
        self,
        *,
        backbone: nn.Module,
        proposal_generator: nn.Module,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
    ):
        """
        Args:
            backbone: a :class:`Backbone`.
            proposal_generator: e.g. :class:`RPN`.
            pixel_mean, pixel_std: per-channel normalisation of the input images.
        """
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self._register_pixel_stats("ProposalNetwork", pixel_mean, pixel_std)

    def preprocess_image(self, batched_inputs: list[dict[str, torch.Tensor]]) -> ImageList:
        """Normalise the images and pad them into an :class:`ImageList` as the backbone requires."""
        return ImageList.from_tensors(
            self._normalized_images(batched_inputs),
            self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        )

    def forward(self, batched_inputs: list[dict[str, Any]]):
        """Training: the proposal losses. Inference: per image, ``{"proposals": Instances}``."""
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        gt_instances = self._gt_instances(batched_inputs)
        if self.training and gt_instances is None:
            raise ValueError("ProposalNetwork: training needs ground truth under batched_inputs[i]['instances'].")
        proposals, losses = self.proposal_generator(images, features, gt_instances)
        if self.training:
            return losses
        processed = []
        for result, x, size in zip(proposals, batched_inputs, images.image_sizes):
            height = x.get("height", size[0])
            width = x.get("width", size[1])
            processed.append({"proposals": detector_postprocess(result, height, width)})
        return processed

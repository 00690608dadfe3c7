"""DETR: End-to-End Object Detection with Transformers (Carion et al. 2020, https://arxiv.org/abs/2005.12872)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from libdet.layers import move_device_like
from libdet.modeling.postprocessing import detector_postprocess
from libdet.structures import Boxes, ImageList, Instances

from .box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh
from .criterion import SetCriterion
from .transformer import Transformer

__all__ = ["DETR", "MLP"]


class MLP(nn.Module):
    """Linear layers with ReLU between them (none after the last).

    Args:
        input_dim, hidden_dim, output_dim: widths.
        num_layers: number of linear layers.
    """

    def __init__(self, *, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        out_dims = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, out_dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class DETR(nn.Module):
    """A backbone feature map, projected to ``d_model`` channels, goes through the encoder; ``num_queries``
    learned object queries decode it into as many (class, box) predictions.

    Takes detectron2-style batched inputs (a list of dicts with "image" (C, H, W) in ``input_format``, optionally
    "height"/"width" of the original image and, in training, "instances" with ``gt_boxes`` / ``gt_classes``).
    Training returns the loss dict; inference returns ``[{"instances": Instances}]`` at the original image size.

    Args:
        backbone: a libdet backbone returning ``{in_feature: (N, C_b, H/s, W/s)}`` (e.g. ResNet with FrozenBN).
        in_feature: the backbone output that feeds the transformer ("res5").
        position_embedding: module ``mask (N, H, W) -> (N, d_model, H, W)`` (sine or learned).
        transformer: the encoder-decoder.
        num_classes: object classes K; the class head has K + 1 outputs, the last meaning "no object".
        num_queries: object queries (100).
        criterion: the set loss (needed for training only).
        aux_loss: train every decoder layer's predictions (the paper's auxiliary losses), not just the last.
        pixel_mean, pixel_std: per-channel normalisation of the input images (in ``input_format``'s order).
        input_format: channel order of "image" ("RGB" for the official weights), used by predictors and demos.
        size_divisibility: pad the batch to a multiple of this (0: to the largest image only).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        in_feature: str = "res5",
        position_embedding: nn.Module,
        transformer: Transformer,
        num_classes: int,
        num_queries: int = 100,
        criterion: SetCriterion | None = None,
        aux_loss: bool = True,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "RGB",
        size_divisibility: int = 0,
    ):
        super().__init__()
        shapes = backbone.output_shape()
        if in_feature not in shapes:
            raise ValueError(f"DETR: in_feature={in_feature!r} is not a backbone output; outputs: {sorted(shapes)}.")
        d_model = transformer.d_model
        self.backbone = backbone
        self.in_feature = in_feature
        self.position_embedding = position_embedding
        self.transformer = transformer
        self.input_proj = nn.Conv2d(shapes[in_feature].channels, d_model, kernel_size=1)
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.class_embed = nn.Linear(d_model, num_classes + 1)
        self.bbox_embed = MLP(input_dim=d_model, hidden_dim=d_model, output_dim=4, num_layers=3)
        self.criterion = criterion
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.aux_loss = aux_loss
        self.input_format = input_format
        self.size_divisibility = size_divisibility
        if criterion is not None and criterion.num_classes != num_classes:
            raise ValueError(f"DETR: criterion.num_classes={criterion.num_classes} != num_classes={num_classes}.")
        mean = torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1)
        if mean.numel() != std.numel() or (std <= 0).any():
            raise ValueError(f"DETR: pixel_mean {list(pixel_mean)} / pixel_std {list(pixel_std)} are invalid.")
        # not persistent: detectron2-style checkpoints carry no pixel statistics, configs do
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: list[dict[str, Any]]) -> tuple[ImageList, torch.Tensor]:
        """Normalise and pad the images.

        Returns:
            the padded batch and its (N, H, W) bool mask, True at padded pixels.
        """
        images = []
        for i, x in enumerate(batched_inputs):
            if "image" not in x:
                raise ValueError(f"DETR: batched_inputs[{i}] has no 'image' key.")
            image = move_device_like(x["image"], self.pixel_mean)
            if image.dim() != 3 or image.shape[0] != self.pixel_mean.shape[0]:
                raise ValueError(
                    f"DETR: batched_inputs[{i}]['image'] must be (C, H, W) with C={self.pixel_mean.shape[0]}, "
                    f"got {tuple(image.shape)}."
                )
            images.append((image.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std)
        image_list = ImageList.from_tensors(images, self.size_divisibility)
        n, _, h, w = image_list.tensor.shape
        mask = torch.ones((n, h, w), dtype=torch.bool, device=image_list.tensor.device)
        for i, (ih, iw) in enumerate(image_list.image_sizes):
            mask[i, :ih, :iw] = False
        return image_list, mask

    def forward_transformer(self, feature: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything after the backbone.

        Args:
            feature: (N, C_b, h, w) backbone output ``in_feature``.
            mask: (N, H, W) bool image padding mask, True at padded pixels.

        Returns:
            dict with "logits" (L, N, Q, K + 1) and "boxes" (L, N, Q, 4) (normalised cx, cy, w, h relative to each
            image's unpadded size) of every decoder layer, "hs" (L, N, Q, d_model) decoder outputs, "memory"
            (N, d_model, h, w) encoder output, "src" (N, d_model, h, w) projected feature and "mask" (N, h, w) its
            padding mask.
        """
        feature_mask = F.interpolate(mask[None].float(), size=feature.shape[-2:])[0].to(torch.bool)
        pos = self.position_embedding(feature_mask).to(feature.dtype)
        src = self.input_proj(feature)
        hs, memory = self.transformer(src, feature_mask, self.query_embed.weight, pos)
        return {
            "logits": self.class_embed(hs),
            "boxes": self.bbox_embed(hs).sigmoid(),
            "hs": hs,
            "memory": memory,
            "src": src,
            "mask": feature_mask,
        }

    def predict(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw outputs of a padded batch.

        Args:
            images: (N, 3, H, W) normalised padded images.
            mask: (N, H, W) bool, True at padded pixels.

        Returns:
            logits: (L, N, Q, K + 1) class logits of every decoder layer.
            boxes: (L, N, Q, 4) normalised cx, cy, w, h (relative to each image's unpadded size).
            memory: (N, d_model, h, w) encoder output.
        """
        out = self.forward_transformer(self.backbone(images)[self.in_feature], mask)
        return out["logits"], out["boxes"], out["memory"]

    def forward(self, batched_inputs: list[dict[str, Any]]):
        images, mask = self.preprocess_image(batched_inputs)
        logits, boxes, _ = self.predict(images.tensor, mask)
        if self.training:
            if self.criterion is None:
                raise ValueError("DETR: training needs a `criterion`.")
            targets = self.prepare_targets(batched_inputs, images)
            if not self.aux_loss:
                logits, boxes = logits[-1:], boxes[-1:]
            return self.criterion(logits, boxes, targets)
        return self.postprocess(self.inference(logits[-1], boxes[-1], images.image_sizes), batched_inputs, images)

    def prepare_targets(self, batched_inputs: list[dict[str, Any]], images: ImageList) -> list[dict[str, torch.Tensor]]:
        """Ground truth as the criterion wants it: "labels" (T,) and "boxes" (T, 4) cx, cy, w, h normalised by the
        unpadded image size."""
        targets = []
        for i, (x, (h, w)) in enumerate(zip(batched_inputs, images.image_sizes)):
            if "instances" not in x:
                raise ValueError(f"DETR: training input {i} has no 'instances'.")
            inst = x["instances"].to(self.device)
            scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
            boxes = box_xyxy_to_cxcywh(inst.gt_boxes.tensor.float() / scale)
            targets.append({"labels": inst.gt_classes.long(), "boxes": boxes})
        return targets

    def inference(
        self, logits: torch.Tensor, boxes: torch.Tensor, image_sizes: list[tuple[int, int]]
    ) -> list[Instances]:
        """One detection per query: its most likely real class (softmax over K + 1, "no object" excluded) and box.

        Args:
            logits: (N, Q, K + 1) final class logits.
            boxes: (N, Q, 4) normalised cx, cy, w, h.
            image_sizes: the N (h, w) input image sizes.

        Returns:
            N ``Instances`` at the input image size with ``pred_boxes``, ``scores``, ``pred_classes``.
        """
        scores, labels = logits.softmax(-1)[..., :-1].max(-1)
        results = []
        for score, label, box, (h, w) in zip(scores, labels, boxes, image_sizes):
            result = Instances((h, w))
            scale = torch.tensor([w, h, w, h], dtype=box.dtype, device=box.device)
            result.pred_boxes = Boxes(box_cxcywh_to_xyxy(box) * scale)
            result.scores = score
            result.pred_classes = label
            results.append(result)
        return results

    @staticmethod
    def postprocess(
        results: list[Instances], batched_inputs: list[dict[str, Any]], images: ImageList
    ) -> list[dict[str, Instances]]:
        """Rescale the detections to each input's "height" / "width" (the original image size)."""
        processed = []
        for result, x, image_size in zip(results, batched_inputs, images.image_sizes):
            height = x.get("height", image_size[0])
            width = x.get("width", image_size[1])
            processed.append({"instances": detector_postprocess(result, height, width)})
        return processed

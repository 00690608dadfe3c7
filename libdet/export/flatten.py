"""Flatten nested model inputs/outputs (lists, tuples, dicts, :class:`Instances`, :class:`Boxes`-like
wrappers) into tuples of tensors and rebuild them from a schema — detectron2's ``flatten`` API, which
tracing needs (``torch.jit.trace`` takes and returns tensors only).

Example::

    adapter = TracingAdapter(model, [{"image": image}])
    traced = torch.jit.trace(adapter, adapter.flattened_inputs)
    outputs = adapter.outputs_schema(traced(*adapter.flattened_inputs))  # the model's output structure
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from libdet.structures import Boxes, Instances, ROIMasks

__all__ = [
    "Schema",
    "IdentitySchema",
    "ListSchema",
    "TupleSchema",
    "DictSchema",
    "InstancesSchema",
    "TensorWrapSchema",
    "flatten_to_tuple",
    "TracingAdapter",
]


class Schema:
    """Rebuilds an object from the flat tuple of tensors that :func:`flatten_to_tuple` made of it."""

    def __call__(self, values: tuple) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__.")

    @staticmethod
    def _concat(values: list[tuple]) -> tuple[tuple, list[int]]:
        sizes = [len(v) for v in values]
        return tuple(x for v in values for x in v), sizes

    @staticmethod
    def _split(values: tuple, sizes: list[int]) -> list[tuple]:
        if len(values) != sum(sizes):
            raise ValueError(f"Schema: got {len(values)} values but the schema describes {sum(sizes)}.")
        out, start = [], 0
        for size in sizes:
            out.append(tuple(values[start : start + size]))
            start += size
        return out


@dataclass
class IdentitySchema(Schema):
    """A single tensor (or, with ``allow_non_tensor``, any leaf)."""

    def __call__(self, values: tuple) -> Any:
        return values[0]


@dataclass
class ListSchema(Schema):
    """A list: one schema and flat size per element."""

    schemas: list[Schema]
    sizes: list[int]

    def __call__(self, values: tuple) -> list:
        return [schema(v) for schema, v in zip(self.schemas, self._split(values, self.sizes))]

    @classmethod
    def flatten(cls, obj: list | tuple, allow_non_tensor: bool) -> tuple[tuple, Schema]:
        flat = [flatten_to_tuple(x, allow_non_tensor) for x in obj]
        values, sizes = cls._concat([f[0] for f in flat])
        return values, cls([f[1] for f in flat], sizes)


@dataclass
class TupleSchema(ListSchema):
    """A tuple: as :class:`ListSchema`."""

    def __call__(self, values: tuple) -> tuple:
        return tuple(super().__call__(values))


@dataclass
class DictSchema(ListSchema):
    """A dict with string keys (flattened in sorted key order)."""

    keys: list[str]

    def __call__(self, values: tuple) -> dict:
        return dict(zip(self.keys, super().__call__(values)))

    @classmethod
    def flatten(cls, obj: dict, allow_non_tensor: bool) -> tuple[tuple, Schema]:
        for key in obj:
            if not isinstance(key, str):
                raise KeyError(f"flatten_to_tuple: only dicts with string keys can be flattened, got key {key!r}.")
        keys = sorted(obj)
        values, schema = ListSchema.flatten([obj[k] for k in keys], allow_non_tensor)
        return values, cls(schema.schemas, schema.sizes, keys)


@dataclass
class InstancesSchema(DictSchema):
    """An :class:`Instances`: its fields, then its image size (a tensor while tracing)."""

    def __call__(self, values: tuple) -> Instances:
        image_size = values[-1]
        fields = super().__call__(values[:-1])
        if isinstance(image_size, torch.Tensor) and not torch.jit.is_tracing():
            image_size = tuple(int(x) for x in image_size)
        return Instances(image_size, **fields)

    @classmethod
    def flatten(cls, obj: Instances, allow_non_tensor: bool) -> tuple[tuple, Schema]:
        values, schema = DictSchema.flatten(obj.get_fields(), allow_non_tensor)
        size = obj.image_size
        if not isinstance(size, torch.Tensor):
            size = torch.tensor(size)
        return values + (size,), cls(schema.schemas, schema.sizes, schema.keys)


@dataclass
class TensorWrapSchema(Schema):
    """A class that wraps one tensor as ``.tensor`` and is built from it (:class:`Boxes`, :class:`ROIMasks`,
    ...): its import path and the tensor."""

    class_name: str

    def __call__(self, values: tuple) -> Any:
        import importlib

        module, _, name = self.class_name.rpartition(".")
        return getattr(importlib.import_module(module), name)(values[0])


def flatten_to_tuple(obj: Any, allow_non_tensor: bool = False) -> tuple[tuple, Schema]:
    """Flatten ``obj`` into ``(tuple of tensors, schema)``; ``schema(values)`` rebuilds it.

    Supported: tensors, lists, tuples, string-keyed dicts, :class:`Instances` and single-tensor wrappers
    (:class:`Boxes`, :class:`RotatedBoxes`, :class:`ROIMasks`, :class:`BitMasks`, :class:`Keypoints`).

    Raises:
        ValueError: for another type, unless ``allow_non_tensor`` (then it is kept as a leaf).
    """
    if isinstance(obj, torch.Tensor):
        return (obj,), IdentitySchema()
    if isinstance(obj, Instances):
        return InstancesSchema.flatten(obj, allow_non_tensor)
    if isinstance(obj, dict):
        return DictSchema.flatten(obj, allow_non_tensor)
    if isinstance(obj, tuple):
        values, schema = ListSchema.flatten(obj, allow_non_tensor)
        return values, TupleSchema(schema.schemas, schema.sizes)
    if isinstance(obj, list):
        return ListSchema.flatten(obj, allow_non_tensor)
    wrapped = getattr(obj, "tensor", None)
    if isinstance(obj, (Boxes, ROIMasks)) or (
        isinstance(wrapped, torch.Tensor) and type(obj).__module__.startswith("libdet.")
    ):
        return (wrapped,), TensorWrapSchema(f"{type(obj).__module__}.{type(obj).__qualname__}")
    if allow_non_tensor:
        return (obj,), IdentitySchema()
    raise ValueError(f"flatten_to_tuple: cannot flatten an object of type {type(obj).__name__}.")


class TracingAdapter(nn.Module):
    """Wrap a model whose inputs/outputs are nested structures so that it takes and returns flat tuples
    of tensors (what ``torch.jit.trace`` and ``torch.export`` need).

    Attributes:
        flattened_inputs: the flat tensors of ``inputs`` (pass them to the tracer).
        inputs_schema: rebuilds the model inputs from flat tensors.
        outputs_schema: rebuilds the model outputs; set by the first :meth:`forward`.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: Any,
        inference_func: Callable[..., Any] | None = None,
        allow_non_tensor: bool = False,
    ):
        """
        Args:
            model: the model to wrap.
            inputs: sample inputs: a tuple of positional arguments, or one argument (e.g. detectron2's
                list of dicts).
            inference_func: ``inference_func(model, *inputs) -> outputs``; default ``model(*inputs)``.
            allow_non_tensor: keep non-tensor leaves of ``inputs`` as constants instead of raising.
        """
        super().__init__()
        self.model = model.eval() if isinstance(model, nn.Module) else model
        if not isinstance(inputs, tuple):
            inputs = (inputs,)
        self.inputs = inputs
        self.allow_non_tensor = allow_non_tensor
        self.inference_func = inference_func or (lambda m, *args: m(*args))
        self.flattened_inputs, self.inputs_schema = flatten_to_tuple(inputs, allow_non_tensor)
        if allow_non_tensor:
            # The constants stay in the schema; only tensors are traced inputs.
            self._constants = [x if not isinstance(x, torch.Tensor) else None for x in self.flattened_inputs]
            self.flattened_inputs = tuple(x for x in self.flattened_inputs if isinstance(x, torch.Tensor))
        self.outputs_schema: Schema | None = None

    def forward(self, *args: torch.Tensor) -> tuple:
        with torch.no_grad():
            if self.allow_non_tensor:
                tensors = iter(args)
                args = tuple(next(tensors) if c is None else c for c in self._constants)
            inputs = self.inputs_schema(args)
            outputs = self.inference_func(self.model, *inputs)
            flat, schema = flatten_to_tuple(outputs)
            if self.outputs_schema is None:
                self.outputs_schema = schema
            return flat

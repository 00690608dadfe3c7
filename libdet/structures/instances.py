"""The :class:`Instances` container: the per-image list of detected or annotated objects."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import torch

__all__ = ["Instances"]


class Instances:
    """A list of ``N`` instances in one image, stored as named fields of equal length ``N``.

    Fields are things like ``gt_boxes`` (:class:`Boxes`), ``scores`` (``(N,)`` tensor), ``pred_masks`` or a
    plain Python list; any object with ``len()`` and ``__getitem__`` works. Every field must have the same
    length, which is checked when the field is set.

    Fields are read and written as attributes (``instances.scores = s``) or with :meth:`set`/:meth:`get`.
    Indexing (``instances[mask]``) applies the same index to every field. Names starting with ``_`` are
    ordinary attributes, not fields.

    Example::

        instances = Instances((480, 640))
        instances.gt_boxes = Boxes(torch.rand(2, 4))
        instances.gt_classes = torch.tensor([3, 1])
        kept = instances[instances.gt_classes > 2]
    """

    def __init__(self, image_size: tuple[int, int], **kwargs: Any):
        """
        Args:
            image_size: ``(height, width)`` of the image.
            kwargs: fields to set, by name.
        """
        self._image_size = image_size
        self._fields: dict[str, Any] = {}
        for name, value in kwargs.items():
            self.set(name, value)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the image."""
        return self._image_size

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails. `_fields` is excluded so that copy/pickle, which look up
        # attributes before __init__ has run, get an AttributeError instead of infinite recursion.
        if name == "_fields" or name not in self._fields:
            raise AttributeError(f"Cannot find field '{name}' in the given Instances!")
        return self._fields[name]

    def set(self, name: str, value: Any) -> None:
        """Set the field ``name`` to ``value``.

        Raises:
            ValueError: if ``value`` has a different length than the fields already present.
        """
        with warnings.catch_warnings(record=True):
            # len() of a tensor warns while tracing; the length check is still wanted.
            data_len = len(value)
        if len(self._fields) and data_len != len(self):
            existing = next(iter(self._fields))
            raise ValueError(
                f"Instances.set: field '{name}' has length {data_len}, but this Instances has length "
                f"{len(self)} (e.g. field '{existing}'). All fields must have the same length."
            )
        self._fields[name] = value

    def has(self, name: str) -> bool:
        """Return whether the field ``name`` exists."""
        return name in self._fields

    def remove(self, name: str) -> None:
        """Delete the field ``name``.

        Raises:
            KeyError: if there is no such field.
        """
        del self._fields[name]

    def get(self, name: str) -> Any:
        """Return the field ``name``.

        Raises:
            KeyError: if there is no such field.
        """
        return self._fields[name]

    def get_fields(self) -> dict[str, Any]:
        """Return the dict of all fields (the live dict: modifying it modifies the instances)."""
        return self._fields

    def to(self, *args: Any, **kwargs: Any) -> Instances:
        """Return new :class:`Instances` with ``.to(*args, **kwargs)`` applied to every field that has ``to``."""
        ret = Instances(self._image_size)
        for name, value in self._fields.items():
            if hasattr(value, "to"):
                value = value.to(*args, **kwargs)
            ret.set(name, value)
        return ret

    def __getitem__(self, item: int | slice | torch.Tensor | list[int]) -> Instances:
        """Select instances from every field.

        Args:
            item: an int, a slice, a bool mask of length N, or an index tensor/list. An int selects one
                instance and still returns :class:`Instances` (of length 1).

        Raises:
            IndexError: if an int index is out of range.
        """
        if type(item) is int:
            n = len(self)
            if item >= n or item < -n:
                raise IndexError(f"Instances index {item} is out of range for {n} instances.")
            # A slice keeps every field's structure (Boxes stay Boxes, lists stay lists).
            item = slice(item, None, n)
        ret = Instances(self._image_size)
        for name, value in self._fields.items():
            ret.set(name, value[item])
        return ret

    def __len__(self) -> int:
        for value in self._fields.values():
            return len(value)
        raise NotImplementedError("Empty Instances does not support __len__!")

    def __iter__(self):
        raise NotImplementedError("`Instances` object is not iterable!")

    @staticmethod
    def cat(instance_lists: list[Instances]) -> Instances:
        """Concatenate instances of the same image.

        Tensor fields are concatenated with ``torch.cat``, lists are chained, and other fields with their
        type's ``cat`` (e.g. :meth:`Boxes.cat`).

        Args:
            instance_lists: a non-empty list of :class:`Instances` with the same image size and fields.

        Raises:
            ValueError: for an empty list, different image sizes, or a field that cannot be concatenated.
            TypeError: if an element is not :class:`Instances`.
        """
        if len(instance_lists) == 0:
            raise ValueError("Instances.cat: `instance_lists` is empty.")
        for i, inst in enumerate(instance_lists):
            if not isinstance(inst, Instances):
                raise TypeError(f"Instances.cat: `instance_lists[{i}]` is a {type(inst)}, expected Instances.")
        if len(instance_lists) == 1:
            return instance_lists[0]

        image_size = instance_lists[0].image_size
        if not isinstance(image_size, torch.Tensor):  # a tensor while tracing; cannot be compared then
            for i, inst in enumerate(instance_lists[1:], start=1):
                if inst.image_size != image_size:
                    raise ValueError(
                        f"Instances.cat: `instance_lists[{i}]` has image_size {inst.image_size}, "
                        f"but `instance_lists[0]` has {image_size}."
                    )
        ret = Instances(image_size)
        for name in instance_lists[0]._fields.keys():
            values = [inst.get(name) for inst in instance_lists]
            first = values[0]
            if isinstance(first, torch.Tensor):
                merged = torch.cat(values, dim=0)
            elif isinstance(first, list):
                merged = list(itertools.chain(*values))
            elif hasattr(type(first), "cat"):
                merged = type(first).cat(values)
            else:
                raise ValueError(f"Instances.cat: field '{name}' has type {type(first)}, which cannot be concatenated.")
            ret.set(name, merged)
        return ret

    def __str__(self) -> str:
        num = len(self) if self._fields else 0
        fields = ", ".join(f"{k}: {v}" for k, v in self._fields.items())
        return (
            f"{self.__class__.__name__}(num_instances={num}, image_height={self._image_size[0]}, "
            f"image_width={self._image_size[1]}, fields=[{fields}])"
        )

    __repr__ = __str__

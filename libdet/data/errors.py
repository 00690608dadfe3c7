"""Exceptions for bad data, as opposed to bugs.

A :class:`DataError` says "this sample's files or annotations are broken": :class:`~libdet.data.MapDataset`
skips such a sample and maps another one (up to a bound on how many samples may fail). Any other exception
from a mapper is treated as a programming error and raised at once, so a bug that breaks some fraction of
the images stops training instead of silently biasing it.

Each class also derives from the builtin exception that code written for detectron2 would catch (``OSError``
for unreadable images, ``FileNotFoundError`` for missing ones, ``ValueError`` for malformed annotations).
"""

from __future__ import annotations

__all__ = [
    "AnnotationError",
    "DataError",
    "ImageNotFoundError",
    "ImageReadError",
    "SizeMismatchError",
]


class DataError(Exception):
    """Base class: a sample's data (image file, annotation) is missing, unreadable or malformed."""


class ImageReadError(DataError, OSError):
    """An image file exists but cannot be decoded (corrupt, truncated, not an image)."""


class ImageNotFoundError(DataError, FileNotFoundError):
    """An image file named by a dataset dict does not exist."""


class AnnotationError(DataError, ValueError):
    """An annotation is malformed (see :mod:`libdet.data.validation` for the rules); the message names the file
    and the annotation id."""


class SizeMismatchError(DataError, ValueError):
    """An image's decoded size differs from the ``width``/``height`` (or an RLE's ``size``) recorded for it."""

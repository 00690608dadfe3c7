"""Global catalogs of datasets (name -> loader function) and of their metadata (name -> :class:`Metadata`).

These two catalogs are the only global registries of libdet: a dataset is registered once under a name
together with a function that returns its list of dataset dicts, and the metadata (class names, colours,
evaluator type, ...) shared by every image of the dataset is stored beside it.
"""

from __future__ import annotations

import difflib
import logging
import types
from collections import UserDict
from collections.abc import Callable
from typing import Any

__all__ = ["DatasetCatalog", "MetadataCatalog", "Metadata", "register_dataset_spec_kind"]

logger = logging.getLogger(__name__)


def _close_names(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    if close:
        return f"Did you mean one of {close}?"
    shown = sorted(names)[:20]
    more = "" if len(names) <= 20 else f" (and {len(names) - 20} more)"
    return f"Registered datasets: {shown}{more}."


# kind -> function registering the dataset named by a spec "kind:..." (see libdet.data.datasets.specs)
_SPEC_RESOLVERS: dict[str, Callable[[str], None]] = {}


def register_dataset_spec_kind(kind: str, resolver: Callable[[str], None]) -> None:
    """Let names ``"<kind>:..."`` stand for datasets registered on first use by ``resolver(name)``."""
    _SPEC_RESOLVERS[kind] = resolver


_RESOLVING: set[str] = set()


def _resolve_spec(name: Any) -> None:
    """Register the dataset of spec ``name`` (e.g. ``"coco:train.json@images"``) if it is one, on first use.

    Errors (a missing file, a malformed spec) propagate, naming the spec: they say more than "not registered".
    """
    if not isinstance(name, str) or ":" not in name or name in DatasetCatalog.data or name in _RESOLVING:
        return
    kind = name.split(":", 1)[0]
    if kind in _SPEC_RESOLVERS:
        _RESOLVING.add(name)  # the resolver uses the catalogs itself
        try:
            _SPEC_RESOLVERS[kind](name)
        finally:
            _RESOLVING.discard(name)


class _DatasetCatalog(UserDict):
    """Maps a dataset name to a function returning its ``list[dict]`` in libdet's dataset format.

    Registration stores the function only: nothing is loaded until :meth:`get` is called, so registering
    many datasets is free. Each :meth:`get` calls the function again (no caching).

    Besides registered names, dataset specs such as ``coco:<annotations.json>@<image_dir>`` or ``yolo:<dir>``
    are accepted wherever a name is (see :mod:`libdet.data.datasets.specs`): they register themselves, under
    the spec as their name, on first use.
    """

    def __contains__(self, name: object) -> bool:
        _resolve_spec(name)
        return name in self.data

    def register(self, name: str, func: Callable[[], list[dict]]) -> None:
        """Register ``func`` (no arguments, returns ``list[dict]``) under ``name``.

        Raises:
            TypeError: ``func`` is not callable.
            ValueError: ``name`` is already registered.
        """
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register({name!r}, ...): func must be callable, got {type(func)}.")
        if name in self:
            raise ValueError(
                f"Dataset {name!r} is already registered in DatasetCatalog; call "
                f"DatasetCatalog.remove({name!r}) first to replace it."
            )
        self[name] = func

    def get(self, name: str) -> list[dict]:  # type: ignore[override]
        """Call the function registered as ``name`` and return its list of dataset dicts.

        Raises:
            KeyError: ``name`` is not registered (the message lists close names).
            TypeError: the function did not return a list.
        """
        _resolve_spec(name)
        try:
            func = self.data[name]
        except KeyError:
            raise KeyError(
                f"Dataset {name!r} is not registered in DatasetCatalog. {_close_names(name, list(self.data))}"
            ) from None
        dicts = func()
        if not isinstance(dicts, list):
            raise TypeError(
                f"The function registered for dataset {name!r} must return a list of dicts, got {type(dicts).__name__}."
            )
        return dicts

    def list(self) -> list[str]:
        """Names of all registered datasets."""
        return list(self.data.keys())

    def remove(self, name: str) -> None:
        """Unregister ``name`` (a ``KeyError`` if it is not registered)."""
        if name not in self.data:
            raise KeyError(f"Cannot remove dataset {name!r}: it is not registered in DatasetCatalog.")
        del self.data[name]

    def __str__(self) -> str:
        return f"DatasetCatalog(registered datasets: {', '.join(self.data.keys())})"

    __repr__ = __str__


DatasetCatalog = _DatasetCatalog()
"""The global dataset catalog: ``DatasetCatalog.register(name, func)``, ``DatasetCatalog.get(name)``."""


class Metadata(types.SimpleNamespace):
    """Attribute namespace of one dataset's metadata (``thing_classes``, ``evaluator_type``, ...).

    An attribute, once set, can only be set again to an equal value: metadata is shared by everything that
    uses the dataset, so silently changing it is treated as a bug. Use :meth:`set` to set several at once.
    Reading a missing attribute raises ``AttributeError`` naming the dataset and the keys it has.
    """

    name: str = "N/A"

    def __getattr__(self, key: str) -> Any:
        # Only called when normal lookup fails.
        if key.startswith("__") or key == "name":
            raise AttributeError(key)
        raise AttributeError(
            f"Attribute {key!r} does not exist in the metadata of dataset {self.name!r}. "
            f"Available keys are {sorted(self.__dict__.keys())}."
        )

    def __setattr__(self, key: str, value: Any) -> None:
        old = self.__dict__.get(key, _MISSING)
        if old is not _MISSING and not _same(old, value):
            raise ValueError(
                f"Attribute {key!r} in the metadata of dataset {self.name!r} cannot be set to a different "
                f"value!\n{old!r} != {value!r}"
            )
        self.__dict__[key] = value

    def as_dict(self) -> dict[str, Any]:
        """A shallow copy of all attributes (including ``name``) as a dict."""
        return dict(self.__dict__)

    def set(self, **kwargs: Any) -> Metadata:
        """Set several attributes; returns ``self`` so calls can be chained."""
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        """The attribute ``key`` or ``default`` when it is not set."""
        return self.__dict__.get(key, default)


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    try:
        eq = a == b
        if isinstance(eq, bool):
            return eq
        # numpy arrays / tensors: elementwise comparison
        return bool(eq.all())
    except Exception:  # noqa: BLE001 - incomparable values are different
        return a is b


class _MetadataCatalog(UserDict):
    """Maps a dataset name to its :class:`Metadata`; ``get`` creates an empty one on first use."""

    def get(self, name: str) -> Metadata:  # type: ignore[override]
        """The metadata of dataset ``name`` (created empty, with ``name`` set, if it does not exist yet)."""
        if not name:
            raise ValueError("MetadataCatalog.get: dataset name must be a non-empty string.")
        _resolve_spec(name)
        m = self.data.get(name)
        if m is None:
            m = self.data[name] = Metadata(name=name)
        return m

    def list(self) -> list[str]:
        """Names of all datasets that have metadata."""
        return list(self.data.keys())

    def remove(self, name: str) -> None:
        """Drop the metadata of ``name`` (a ``KeyError`` if it has none)."""
        if name not in self.data:
            raise KeyError(f"Cannot remove metadata of {name!r}: MetadataCatalog has no entry for it.")
        del self.data[name]

    def __str__(self) -> str:
        return f"MetadataCatalog(registered metadata: {', '.join(self.data.keys())})"

    __repr__ = __str__


MetadataCatalog = _MetadataCatalog()
"""The global metadata catalog: ``MetadataCatalog.get(name).thing_classes = [...]``."""

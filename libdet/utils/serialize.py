"""Pickle what the standard pickle cannot (lambdas, closures, local classes), e.g. to send to worker processes."""

from __future__ import annotations

from typing import Any

__all__ = ["PicklableWrapper"]


def _unpickle(data: bytes) -> Any:
    import cloudpickle

    return cloudpickle.loads(data)


class PicklableWrapper:
    """Wrap an object so that pickling it uses cloudpickle, which serialises functions by value.

    The wrapper forwards calls and attribute access to the wrapped object, so it can stand in for it (e.g. a
    dataset mapper given to ``DataLoader`` workers under the ``spawn`` start method). Unpickling returns the
    wrapped object itself. Only unpickle data you trust: unpickling runs code.

    Args:
        obj: any object; wrapping a wrapper wraps its content once.
    """

    def __init__(self, obj: Any):
        while isinstance(obj, PicklableWrapper):
            obj = obj._obj
        self._obj = obj

    def __reduce__(self) -> tuple:
        import cloudpickle

        return _unpickle, (cloudpickle.dumps(self._obj),)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._obj(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        # Only called for attributes the wrapper lacks; "_obj" itself must not recurse while unpickling.
        if attr == "_obj":
            raise AttributeError(attr)
        return getattr(self._obj, attr)

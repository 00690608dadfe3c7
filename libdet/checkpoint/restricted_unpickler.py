"""Unpickle weight files without running code from them.

A pickle can name any importable callable (``os.system``, ``builtins.eval``, ``subprocess.Popen``) and have
it called while loading. Weight files (detectron2 model-zoo ``.pkl``) only need numpy's array
reconstruction and plain containers, so :class:`RestrictedUnpickler` resolves exactly those globals and
refuses every other one *before* it can be called.
"""

from __future__ import annotations

import _compat_pickle
import pickle
from typing import IO, Any

__all__ = ["ALLOWED_GLOBALS", "ForbiddenGlobalError", "RestrictedUnpickler", "restricted_load"]

ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        # numpy arrays and scalars (numpy 1.x and 2.x module paths).
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        # protocol-2 pickles store bytes as ``_codecs.encode(text, "latin1")``.
        ("_codecs", "encode"),
        # containers that have no pickle opcode of their own.
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("builtins", "complex"),
        ("collections", "OrderedDict"),
    }
)
"""``(module, name)`` pairs a weight pickle may reference; everything else is refused."""


class ForbiddenGlobalError(pickle.UnpicklingError, ValueError):
    """A pickle referenced a global outside :data:`ALLOWED_GLOBALS` (it was not imported or called)."""


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that only resolves :data:`ALLOWED_GLOBALS`.

    Args:
        file: a binary file object positioned at the pickle.
        filename: the file's name, used in error messages.
        encoding: how to decode Python 2 ``str`` objects (``"latin1"`` keeps numpy buffers intact).
    """

    def __init__(self, file: IO[bytes], *, filename: str = "<pickle>", encoding: str = "latin1") -> None:
        super().__init__(file, encoding=encoding)
        self._filename = filename

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (``__builtin__``, ``copy_reg``) are mapped the way pickle itself maps them; the
        # mapped name must still be allowed.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if (module, name) not in ALLOWED_GLOBALS:
            raise ForbiddenGlobalError(
                f"Refusing to load {self._filename!r}: the pickle references the global '{module}.{name}', "
                "which a weight file never needs (only numpy arrays and plain containers are allowed). "
                "The file may be malicious; nothing from it was executed."
            )
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise ForbiddenGlobalError(
            f"Refusing to load {self._filename!r}: it uses pickle persistent ids ({pid!r}), which plain weight "
            "pickles do not. If it was written by torch.save, give it a .pth extension."
        )


def restricted_load(file: IO[bytes], *, filename: str = "<pickle>", encoding: str = "latin1") -> Any:
    """Unpickle ``file`` with :class:`RestrictedUnpickler`.

    Raises:
        ForbiddenGlobalError: the pickle references a global outside :data:`ALLOWED_GLOBALS`.
        ValueError: the file is not a valid pickle (the message names ``filename``).
    """
    try:
        return RestrictedUnpickler(file, filename=filename, encoding=encoding).load()
    except ForbiddenGlobalError:
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError) as e:
        raise ValueError(f"{filename!r} is not a readable weight pickle: {type(e).__name__}: {e}") from e

"""Patches that let ``torch.jit.script`` compile libdet's models (detectron2's ``torchscript_patch``).

TorchScript needs a static type for every attribute, but :class:`~libdet.structures.Instances` holds
fields of any type under any name. :func:`patch_instances` generates, for a given ``{field: type}``
table, a TorchScript class with one typed attribute per field and makes TorchScript use it wherever the
model's code mentions ``Instances``. :func:`freeze_training_mode` makes ``self.training`` a compile-time
constant, so that the training-only branches are never compiled. Both are applied by
:func:`libdet.export.scripting_with_instances`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import sys
import tempfile
import typing
from collections.abc import Iterator

import torch
from torch import nn
from torch._sources import fake_range

from libdet.structures import Boxes, Instances

__all__ = ["patch_instances", "freeze_training_mode", "resolved_annotations", "compile_attribute_classes"]

# Each generated class gets a new name: TorchScript caches compiled classes by qualified name.
_counter = itertools.count()


@contextlib.contextmanager
def patch_instances(fields: dict[str, type]) -> Iterator[type]:
    """Within the context, TorchScript compiles ``Instances`` as a generated class with these fields.

    The generated class has, for each field ``name: type``, a property ``name`` (reading an unset field is
    an error) with a setter and an optional keyword argument of the constructor; and ``image_size``,
    ``len()``, ``has(name)``, ``to(device)``, indexing with a tensor, ``Instances.cat`` (of tensor and
    ``Boxes`` fields) and ``get_fields()`` (the fields that are set, as tensors: ``Boxes`` as their
    ``tensor``). Model code must use attribute access (``x.scores``), not ``x.get("scores")``. Outside
    TorchScript nothing changes, except that ``Instances.cat`` is the generated class's while the patch is
    active (TorchScript compiles the function it finds on the class): do not run eager code meanwhile.

    Args:
        fields: field name -> type, e.g. ``{"pred_boxes": Boxes, "scores": torch.Tensor}``. Types must be
            ``torch.Tensor`` or classes TorchScript can compile (``Boxes``, ...).

    Yields:
        The generated Python class (scripted models return objects of this class, which
        :func:`libdet.utils.testing.convert_scripted_instances` turns back into ``Instances``).

    Raises:
        ValueError: for a field name that is not an identifier or starts with ``_``, or a value that is not
            a type.
    """
    for name, field_type in fields.items():
        if not name.isidentifier() or name.startswith("_") or name in ("image_size", "has", "to", "cat", "get_fields"):
            raise ValueError(f"patch_instances: field name {name!r} is not a valid public attribute name.")
        if not isinstance(field_type, type):
            raise ValueError(f"patch_instances: the type of field {name!r} must be a class, got {field_type!r}.")
    class_name = f"ScriptedInstances{next(_counter)}"
    source, namespace = _instances_source(class_name, fields)
    module_name = f"libdet_scripted_instances_{class_name.lower()}"
    with tempfile.TemporaryDirectory(prefix="libdet_torchscript_") as folder:
        # TorchScript reads a class's source with `inspect`, which needs a real file.
        path = os.path.join(folder, module_name + ".py")
        with open(path, "w") as f:
            f.write(source)
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        module.__dict__.update(namespace)
        sys.modules[module_name] = module
        # Functions compiled under an earlier patch (other fields) must be compiled again.
        _clear_jit_cache()
        original_cat = Instances.__dict__["cat"]
        try:
            spec.loader.exec_module(module)
            generated = getattr(module, class_name)
            # TorchScript looks compiled classes up by qualified name: Instances now names the generated one.
            Instances.__torch_script_class__ = True
            Instances._jit_override_qualname = torch._jit_internal._qualified_name(generated)
            # `Instances.cat(...)` is compiled from the Python function found on the class: the generated one
            # for the time of the patch.
            Instances.cat = generated.__dict__["cat"]
            yield generated
        finally:
            Instances.cat = original_cat
            for attribute in ("__torch_script_class__", "_jit_override_qualname"):
                if attribute in Instances.__dict__:
                    delattr(Instances, attribute)
            sys.modules.pop(module_name, None)
            _clear_jit_cache()


def _clear_jit_cache() -> None:
    """Forget TorchScript's compiled free functions and module types, which may refer to a generated
    ``Instances`` class. (Compiled overloads, e.g. of ``F.interpolate``, are kept: clearing them breaks their
    later resolution, and they do not refer to ``Instances``.)"""
    from torch.jit._recursive import concrete_type_store
    from torch.jit._state import _jit_caching_layer

    _jit_caching_layer.clear()
    concrete_type_store.type_store.clear()


def _instances_source(class_name: str, fields: dict[str, type]) -> tuple[str, dict[str, object]]:
    """Python source of the generated class and the globals (field types) it refers to."""
    namespace: dict[str, object] = {"torch": torch, "Boxes": Boxes}
    type_names = {}
    for i, (name, field_type) in enumerate(fields.items()):
        if field_type is torch.Tensor:
            type_names[name] = "torch.Tensor"
        else:
            alias = f"_FieldType{i}_{field_type.__name__}"
            namespace[alias] = field_type
            type_names[name] = alias

    lines = [
        "from typing import Dict, List, Optional, Tuple",
        "",
        "",
        "@torch.jit.script  # compiled when the module is imported, resolving names in its globals",
        f"class {class_name}:",
        "    def __init__(",
        "        self,",
        "        image_size: Tuple[int, int],",
        *[f"        {name}: Optional[{tname}] = None," for name, tname in type_names.items()],
        "    ):",
        "        self.image_size = image_size",
        f"        self._field_names: List[str] = {list(fields)!r}",
    ]
    for name in type_names:
        lines.append(f"        self._{name} = {name}")
    for name, tname in type_names.items():
        lines += [
            "",
            "    @property",
            f"    def {name}(self) -> {tname}:",
            f"        value = self._{name}",
            f"        assert value is not None, 'Instances: field {name} is not set'",
            "        return value",
            "",
            f"    @{name}.setter",
            f"    def {name}(self, value: {tname}) -> None:",
            f"        self._{name} = value",
        ]
    # __len__: the length of the first field that is set.
    lines += ["", "    def __len__(self) -> int:"]
    for name in fields:
        lines += [
            f"        value_{name} = self._{name}",
            f"        if value_{name} is not None:",
            f"            return len(value_{name})",
        ]
    lines.append("        raise NotImplementedError('Empty Instances does not support __len__!')")
    lines += ["", "    def has(self, name: str) -> bool:"]
    for name in fields:
        lines += [f"        if name == {name!r}:", f"            return self._{name} is not None"]
    lines.append("        return False")
    for method, argument, expression in (
        ("to", "device: torch.device", "value.to(device)"),
        ("__getitem__", "item: torch.Tensor", "value[item]"),
    ):
        lines += [
            "",
            f"    def {method}(self, {argument}) -> '{class_name}':",
            f"        ret = {class_name}(self.image_size{', None' * len(fields)})",
        ]
        for name, field_type in fields.items():
            if method == "to" and not hasattr(field_type, "to"):
                continue
            lines += [
                f"        value = self._{name}",
                "        if value is not None:",
                f"            ret._{name} = {expression}",
            ]
        lines.append("        return ret")
    # Instances.cat: fields set in the first element are concatenated (Boxes through their tensors).
    lines += [
        "",
        "    @staticmethod",
        f"    def cat(instance_lists: List['{class_name}']) -> '{class_name}':",
        f"        ret = {class_name}(instance_lists[0].image_size{', None' * len(fields)})",
    ]
    for name, tname in type_names.items():
        is_boxes = fields[name] is not torch.Tensor and issubclass(fields[name], Boxes)
        element = "torch.Tensor" if is_boxes else tname
        joined = f"{tname}(torch.cat(values))" if is_boxes else "torch.cat(values)"
        lines += [
            f"        if instance_lists[0]._{name} is not None:",
            f"            values: List[{element}] = []",
            "            for instances in instance_lists:",
            f"                values.append(instances.{name}{'.tensor' if is_boxes else ''})",
            f"            ret._{name} = {joined}",
        ]
    lines.append("        return ret")
    lines += ["", "    def get_fields(self) -> Dict[str, torch.Tensor]:", "        ret: Dict[str, torch.Tensor] = {}"]
    for name, field_type in fields.items():
        if field_type is torch.Tensor or issubclass(field_type, Boxes):
            suffix = ".tensor" if field_type is not torch.Tensor else ""
            lines += [
                f"        value_{name} = self._{name}",
                f"        if value_{name} is not None:",
                f"            ret[{name!r}] = value_{name}{suffix}",
            ]
    lines.append("        return ret")
    return "\n".join(lines) + "\n", namespace


@contextlib.contextmanager
def freeze_training_mode(model: nn.Module) -> Iterator[None]:
    """Within the context, TorchScript treats ``self.training`` of every module in ``model`` as a constant
    (its current value), so that the branches of the other mode are not compiled (training-only code need
    not be scriptable). The model itself is not modified."""
    classes = {type(m) for m in model.modules()}
    saved = {cls: cls.__dict__.get("__annotations__") for cls in classes}
    try:
        for cls in classes:
            owner, annotations = _own_annotations(cls)
            annotations = _resolve(owner, annotations)
            annotations["training"] = torch.jit.Final[bool]
            cls.__annotations__ = annotations
        yield
    finally:
        _restore_annotations(saved)


def compile_attribute_classes(model: nn.Module) -> None:
    """Compile, for TorchScript, the classes of the plain-object attributes of the modules in ``model``
    (e.g. an RPN's ``Box2BoxTransform``): TorchScript infers the type of such an attribute only if its class
    is already compiled. Classes that do not compile (e.g. training-only helpers) are left out: if the
    model's code uses one, scripting fails there, naming it."""
    seen: set[type] = set()
    for module in model.modules():
        for value in vars(module).values():
            cls = type(value)
            if cls in seen or isinstance(value, (nn.Module, torch.Tensor)) or cls.__module__.split(".")[0] != "libdet":
                continue
            seen.add(cls)
            with contextlib.suppress(Exception):
                torch.jit._script._recursive_compile_class(cls, fake_range())


@contextlib.contextmanager
def resolved_annotations(model: nn.Module) -> Iterator[None]:
    """Within the context, the class-level attribute annotations of the modules in ``model`` (and their
    bases) are types, not strings. Classes defined under ``from __future__ import annotations`` store them
    as strings, which TorchScript cannot read for module attributes ("Unknown type annotation")."""
    classes = {base for m in model.modules() for base in type(m).__mro__ if base is not object}
    saved = {cls: cls.__dict__.get("__annotations__") for cls in classes}
    try:
        for cls in classes:
            annotations = cls.__dict__.get("__annotations__")
            if annotations and any(isinstance(v, str) for v in annotations.values()):
                cls.__annotations__ = _resolve(cls, annotations)
        yield
    finally:
        _restore_annotations(saved)


def _own_annotations(cls: type) -> tuple[type, dict[str, object]]:
    """The annotations TorchScript reads for ``cls`` (its own, else those of the first base that has some),
    and the class that defines them."""
    for base in cls.__mro__:
        annotations = base.__dict__.get("__annotations__")
        if annotations:
            return base, annotations
    return cls, {}


def _resolve(cls: type, annotations: dict[str, object]) -> dict[str, object]:
    module_globals = vars(sys.modules[cls.__module__]) if cls.__module__ in sys.modules else {}
    resolved = {}
    for name, value in annotations.items():
        if isinstance(value, str):
            try:
                value = eval(value, dict(module_globals), {"typing": typing, "torch": torch})  # noqa: S307
            except Exception as e:
                raise TypeError(
                    f"scripting: cannot resolve the annotation {name}: {value!r} of class {cls.__qualname__} "
                    f"({cls.__module__}): {e}"
                ) from e
        resolved[name] = value
    return resolved


def _restore_annotations(saved: dict[type, object]) -> None:
    for cls, original in saved.items():
        if original is None:
            if "__annotations__" in cls.__dict__:
                with contextlib.suppress(AttributeError, TypeError):
                    del cls.__annotations__
        else:
            cls.__annotations__ = original

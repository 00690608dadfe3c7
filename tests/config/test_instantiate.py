import dataclasses
from collections import OrderedDict

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from libdet.config import InstantiationError, instantiate, locate
from libdet.config import LazyCall as L


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0


class Pair:
    def __init__(self, first, second=None):
        self.first = first
        self.second = second


def make_list(n: int) -> list:
    return list(range(n))


def failing_factory(value: int):
    raise ValueError(f"value {value} is not allowed")


def test_lazycall_records_a_dictconfig_with_target():
    cfg = L(Pair)(first=1, second="two")
    assert isinstance(cfg, DictConfig)
    assert cfg._target_ is Pair
    assert list(cfg.keys()) == ["_target_", "first", "second"]


def test_lazycall_rejects_positional_and_bad_targets():
    with pytest.raises(TypeError, match="keyword arguments only"):
        L(Pair)(1)
    with pytest.raises(TypeError, match="callable or an import path"):
        L(3)
    with pytest.raises(TypeError, match="_target_"):
        L(Pair)(_target_=1)


def test_instantiate_nested_structures():
    cfg = L(Pair)(
        first=L(torch.nn.Linear)(in_features=3, out_features=2),
        second=dict(
            items=[L(make_list)(n=2), L("collections.OrderedDict")(a=1), 5],
            inner=L(Pair)(first=L(Point)(x=4), second=(1, 2)),
        ),
    )
    obj = instantiate(cfg)
    assert isinstance(obj, Pair)
    assert isinstance(obj.first, torch.nn.Linear) and obj.first.out_features == 2
    assert isinstance(obj.second, dict)
    assert obj.second["items"][0] == [0, 1]
    assert obj.second["items"][1] == OrderedDict(a=1)
    assert obj.second["items"][2] == 5
    assert isinstance(obj.second["inner"].first, Point) and obj.second["inner"].first.x == 4
    assert list(obj.second["inner"].second) == [1, 2]


def test_instantiate_target_forms_and_passthrough():
    built = torch.nn.ReLU()
    assert instantiate(L(Pair)(first=built)).first is built  # objects already built pass through
    assert instantiate(L("libdet.config.instantiate")(cfg=7)) == 7  # a function by path
    assert instantiate(L(make_list)(n=3)) == [0, 1, 2]  # a function
    assert instantiate({"_target_": "builtins.dict", "a": 1}) == {"a": 1}  # plain dict with a path
    assert instantiate([L(make_list)(n=1), 2]) == [[0], 2]
    assert instantiate(4) == 4 and instantiate("text") == "text"
    assert instantiate(L(Point)(x=1, y=2)) == Point(1, 2)  # dataclass target stored as its path
    assert OmegaConf.is_config(L(Point)(x=1)) and L(Point)(x=1)._target_.endswith("Point")


def test_instantiate_resolves_relative_interpolation():
    cfg = DictConfig(
        {"num_classes": 5, "head": L(torch.nn.Linear)(in_features=2, out_features="${..num_classes}")},
        flags={"allow_objects": True},
    )
    assert instantiate(cfg.head).out_features == 5
    cfg.num_classes = 9
    assert instantiate(cfg)["head"].out_features == 9


def test_locate():
    assert locate("torch.nn.Linear") is torch.nn.Linear
    assert locate("torch.nn.Linear.forward") is torch.nn.Linear.forward
    with pytest.raises(ImportError, match="no module named 'no_such_pkg_xyz'"):
        locate("no_such_pkg_xyz.Thing")
    with pytest.raises(ImportError, match=r"'torch.nn' has no attribute 'Lineer'.*Did you mean: Linear"):
        locate("torch.nn.Lineer")


def test_error_for_unimportable_target_names_path_and_node():
    cfg = DictConfig({"model": {"backbone": L("torch.nn.NoSuchLayer")(x=1)}}, flags={"allow_objects": True})
    with pytest.raises(InstantiationError) as info:
        instantiate(cfg)
    message = str(info.value)
    assert "torch.nn.NoSuchLayer" in message
    assert "'model.backbone'" in message


def test_error_inside_constructor_names_the_node_and_chains():
    cfg = DictConfig({"model": L(Pair)(first=[1, L(failing_factory)(value=3)])}, flags={"allow_objects": True})
    with pytest.raises(InstantiationError) as info:
        instantiate(cfg)
    message = str(info.value)
    assert "'model.first[1]'" in message
    assert "failing_factory" in message
    assert "value 3 is not allowed" in message
    assert isinstance(info.value.__cause__, ValueError)


def test_error_for_wrong_argument_shows_signature():
    with pytest.raises(
        InstantiationError, match=r"unexpected keyword argument 'thrid'.*Signature: .*Pair\(first, second=None\)"
    ):
        instantiate(L(Pair)(first=1, thrid=3))


def test_non_callable_target():
    with pytest.raises(InstantiationError, match="not callable"):
        instantiate({"_target_": "math.pi"})

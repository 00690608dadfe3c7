import builtins
import io
import os
import pickle
import subprocess

import numpy as np
import pytest

from libdet.checkpoint.restricted_unpickler import ForbiddenGlobalError, restricted_load


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_and_containers_load(protocol):
    data = {
        "model": {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.float64(2.5), "c": np.int64(3)},
        "meta": [1, (2, 3), {4, 5}, b"raw", "text", None, 1.5j],
    }
    out = restricted_load(io.BytesIO(pickle.dumps(data, protocol=protocol)))
    np.testing.assert_array_equal(out["model"]["a"], data["model"]["a"])
    assert out["model"]["a"].dtype == np.float32
    assert out["model"]["b"] == 2.5 and out["model"]["c"] == 3
    assert out["meta"] == data["meta"]


class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


@pytest.mark.parametrize(
    "func, args, forbidden",
    [
        (os.system, ("echo hi",), "system"),
        (builtins.eval, ("1+1",), "builtins.eval"),
        (subprocess.check_output, (["true"],), "subprocess.check_output"),
        (getattr, ("text", "upper"), "builtins.getattr"),
    ],
)
def test_forbidden_globals_are_refused(func, args, forbidden):
    payload = pickle.dumps({"model": {"w": _Reduce(func, args)}}, protocol=2)
    with pytest.raises(ForbiddenGlobalError, match=forbidden) as info:
        restricted_load(io.BytesIO(payload), filename="weights.pkl")
    assert "weights.pkl" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_python2_builtin_names_are_still_checked():
    # A Python-2 style GLOBAL opcode naming __builtin__.eval maps to builtins.eval and is refused.
    payload = b"c__builtin__\neval\n(S'1+1'\ntR."
    with pytest.raises(ForbiddenGlobalError, match="builtins.eval"):
        restricted_load(io.BytesIO(payload), filename="py2.pkl")


def test_garbage_is_a_value_error_naming_the_file():
    with pytest.raises(ValueError, match="broken.pkl"):
        restricted_load(io.BytesIO(b"not a pickle"), filename="broken.pkl")

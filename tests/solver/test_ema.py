import pytest
import torch
from torch import nn

from libdet.solver.ema import EMAState, EMAUpdater, apply_model_ema_and_restore


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))


def test_update_formula_and_non_float_copy():
    model = _model()
    state = EMAState.from_model(model)
    updater = EMAUpdater(state, decay=0.75)
    w0 = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(4.0)
    model[1].num_batches_tracked.fill_(7)
    updater.update(model)
    torch.testing.assert_close(state.state["0.weight"], 0.75 * w0 + 0.25 * (w0 + 4.0))
    assert state.state["1.num_batches_tracked"].item() == 7
    assert updater.num_updates == 1


def test_yolox_decay_and_errors():
    updater = EMAUpdater(EMAState(), decay=0.9, yolox=True)
    updater.num_updates = 2000
    assert updater.get_decay() == pytest.approx(0.9 * (1 - torch.exp(torch.tensor(-1.0)).item()))
    with pytest.raises(RuntimeError, match="init_state"):
        updater.update(_model())
    with pytest.raises(ValueError, match="decay"):
        EMAUpdater(EMAState(), decay=1.0)


def test_apply_and_restore_and_ema_model():
    model = _model()
    state = EMAState.from_model(model)
    for v in state.state.values():
        if v.is_floating_point():
            v.fill_(0.5)
    original = model[0].weight.detach().clone()
    with apply_model_ema_and_restore(model, state):
        assert torch.all(model[0].weight == 0.5)
    assert torch.equal(model[0].weight, original)
    ema_model = state.get_ema_model(model)
    assert torch.all(ema_model[0].weight == 0.5) and torch.equal(model[0].weight, original)


def test_state_dict_round_trip_and_mismatch():
    model = _model()
    state = EMAState.from_model(model)
    other = EMAState()
    other.load_state_dict(state.state_dict())
    assert other.has_inited() and set(other.state) == set(state.state)
    with pytest.raises(KeyError, match="different model"):
        EMAState({"x": torch.zeros(1)}).apply_to(model)


def test_wrapped_model_names_match():
    model = _model()
    wrapped = nn.DataParallel(model)
    state = EMAState.from_model(wrapped)
    assert "0.weight" in state.state

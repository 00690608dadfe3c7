"""Training reads nothing from the device between metric writes.

On an accelerator a host read of a tensor (``.item()``, ``float(t)``, ``if t:``, ``.tolist()``, ``.cpu()``,
``.nonzero()``, boolean-mask indexing...) waits for every queued kernel: one per iteration is enough to keep the
device idle while Python prepares the next step. These tests run on CPU, where such reads are free, so they record
them instead: :class:`HostReads` intercepts every Python tensor call and every aten op that would synchronise a
device, and notes the trainer iteration it happened at.
"""

import pytest
import torch
from fvcore.common.param_scheduler import CosineParamScheduler
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from libdet.engine import SimpleTrainer, hooks
from libdet.engine.optimizer_step import ClipGradNorm, OptimizerStep
from libdet.utils.events import CommonMetricPrinter, EventStorage, JSONWriter, get_event_storage

from ._tiny import TinyNet, cycle

# Python-level tensor calls that copy values to the host
_HOST_METHODS = {"item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "__format__"}
# aten ops whose output size or value needs the device's data: a device synchronisation
_SYNCING_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "unique_dim"}


class HostReads:
    """Record host reads of tensors while active: ``reads`` is a list of ``(where, what)``, ``where`` being
    ``where()`` at the time of the read (e.g. the trainer's iteration)."""

    def __init__(self, where=lambda: None):
        self.where = where
        self.reads = []
        outer = self

        class _Functions(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                name = getattr(func, "__name__", "")
                if name in _HOST_METHODS or (name == "to" and _targets_cpu(args[1:], kwargs or {})):
                    outer.reads.append((outer.where(), name))
                return func(*args, **(kwargs or {}))

        class _Ops(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func.overloadpacket.__name__
                bool_index = name == "index" and any(
                    isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]
                )
                if name in _SYNCING_OPS or bool_index:
                    outer.reads.append((outer.where(), name))
                return func(*args, **(kwargs or {}))

        self._modes = [_Functions(), _Ops()]

    def __enter__(self):
        for m in self._modes:
            m.__enter__()
        return self

    def __exit__(self, *exc):
        for m in reversed(self._modes):
            m.__exit__(*exc)

    def places(self):
        return sorted({w for w, _ in self.reads})


def _targets_cpu(args, kwargs):
    # only an explicit ``.to("cpu")``: on this CPU-only run ``.to(other_tensor.device)`` (e.g. the EMA state's
    # device, the model's own) cannot be told apart from a real copy to the host
    return "cpu" in list(args) + [kwargs.get("device")]


@pytest.mark.parametrize(
    "read",
    [
        lambda t: t[0].item(),
        lambda t: float(t[0]),
        lambda t: int(t.sum()),
        lambda t: bool((t > 0).all()),
        lambda t: t.tolist(),
        lambda t: t.cpu(),
        lambda t: t.to("cpu"),
        lambda t: t.numpy(),
        lambda t: t.nonzero(),
        lambda t: t[t > 1],
        lambda t: f"{t[0]:.3f}",
    ],
)
def test_host_reads_are_detected(read):
    t = torch.tensor([1.0, 2.0])
    with HostReads() as reads:
        read(t)
    assert reads.reads, "this host read went unnoticed"


def test_device_only_ops_are_not_host_reads():
    t = torch.tensor([1.0, 2.0], requires_grad=True)
    with HostReads() as reads:
        loss = (t * 2).sum() + t[torch.tensor([1])].sum()
        loss.backward()
        torch.isfinite(loss).all()
        torch.stack([loss.detach(), t.grad.sum()])
    assert reads.reads == []


class _MetricNet(TinyNet):
    """TinyNet that also logs a training metric (a tensor) each iteration, as detection heads do."""

    def forward(self, batch):
        losses = super().forward(batch)
        get_event_storage().put_scalar("abs_error", losses["loss_l1"].detach() * 10)
        return losses


def _batches(n=3):
    g = torch.Generator().manual_seed(0)
    return [
        [{"image": torch.randn(3, 16, 16, generator=g), "target": torch.rand((), generator=g)} for _ in range(2)]
        for _ in range(n)
    ]


def test_training_reads_the_device_only_when_writing_metrics(tmp_path):
    torch.manual_seed(0)
    model = _MetricNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    trainer = SimpleTrainer(
        model,
        cycle(_batches()),
        optimizer,
        step=OptimizerStep(grad_transforms=[ClipGradNorm(10.0)]),
        gather_metric_period=5,
    )
    trainer.register_hooks(
        [
            hooks.IterationTimer(warmup_iter=1),
            hooks.LRScheduler(scheduler=CosineParamScheduler(1.0, 0.1)),
            hooks.EMAHook(model, decay=0.9),
            hooks.PeriodicWriter([JSONWriter(str(tmp_path / "metrics.json")), CommonMetricPrinter(12)], period=5),
        ]
    )
    with HostReads(where=lambda: trainer.iter) as reads:
        trainer.train(0, 12)
    # iterations 4 and 9 end a logging period, 11 is the last one, 12 is after_train
    assert set(reads.places()) <= {4, 9, 11, 12}, reads.reads
    assert {4, 9, 11} <= set(reads.places())  # metrics are read there (the detector works in this run)
    storage = trainer.storage
    assert [it for _, it in storage.history("abs_error").values()] == list(range(12))
    assert [it for _, it in storage.history("grad_norm").values()] == list(range(12))
    # the JSON writer writes the latest values at each write: iterations 4, 9 and 11
    assert (tmp_path / "metrics.json").read_text().count("abs_error") == 3


def test_storage_reads_tensor_scalars_lazily_in_put_order():
    with EventStorage(0) as storage, HostReads() as reads:
        x = torch.tensor(1.5)
        storage.put_scalar("a", x)
        x.add_(1)  # changed after the put: the storage keeps the value at put time
        storage.put_scalar("b", 3)
        storage.put_scalar("a", torch.tensor([7], dtype=torch.int64), cur_iter=2)
        storage.put_scalar("c", torch.tensor(True))
        assert reads.reads == []
        latest = storage.latest()
        assert reads.reads  # read now
    assert latest == {"a": (7.0, 2), "b": (3.0, 0), "c": (1.0, 0)}
    assert storage.history("a").values() == [(1.5, 0), (7.0, 2)]
    with pytest.raises(ValueError, match="one element"):
        storage.put_scalar("d", torch.zeros(2))
    with pytest.raises(ValueError, match="smoothing_hint"):
        storage.put_scalar("a", torch.tensor(0.0), smoothing_hint=False)


def test_model_training_statistics_are_logged_without_host_reads():
    """The detection heads' training statistics (RPN anchors, ROI samples, mask accuracy) are put as tensors."""
    from libdet.modeling.roi_heads.mask_head import mask_rcnn_loss
    from libdet.structures import BitMasks, Boxes, Instances

    inst = Instances((32, 32))
    inst.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 16.0, 16.0], [8.0, 8.0, 30.0, 30.0]]))
    inst.gt_classes = torch.tensor([0, 1])
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, :8, :8] = True
    masks[1, 10:, 10:] = True
    inst.gt_masks = BitMasks(masks)
    logits = torch.randn(2, 2, 7, 7, requires_grad=True)
    with EventStorage(0) as storage:
        mask_rcnn_loss(logits, [inst])
        names = [name for name, value, _ in storage._pending if isinstance(value, torch.Tensor)]
        assert names == ["mask_rcnn/accuracy", "mask_rcnn/false_positive", "mask_rcnn/false_negative"]
        latest = storage.latest()
    assert all(0.0 <= latest[n][0] <= 1.0 for n in names)


def test_scalars_waiting_in_a_storage_without_reader_stay_bounded(monkeypatch):
    from libdet.utils import events

    monkeypatch.setattr(events, "_MAX_PENDING_SCALARS", 4)
    with EventStorage(0) as storage:
        for i in range(10):
            storage.put_scalar("x", torch.tensor(float(i)), cur_iter=i)
            assert len(storage._pending) < 4
        assert [v for v, _ in storage.history("x").values()] == [float(i) for i in range(10)]

import textwrap
from pathlib import Path

import pytest


@pytest.fixture
def config_tree(tmp_path: Path) -> Path:
    """A small config tree like configs/: common/{models,data,train}.py and leaf configs two levels down."""

    def write(rel: str, text: str) -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))

    write(
        "common/models/net.py",
        """
        import torch
        from libdet.config import LazyCall as L

        model = L(torch.nn.Sequential)()
        head = dict(
            num_classes=3,
            layer=L(torch.nn.Linear)(in_features=4, out_features="${..num_classes}"),
        )
        """,
    )
    write(
        "common/models/bigger.py",
        """
        from .net import head  # relative import between siblings

        head.layer.in_features = 8
        """,
    )
    write("common/train.py", "train = dict(max_iter=10, output_dir='./out', name='run', seeds=[1, 2])\n")
    write("common/data/coco.py", "dataloader = dict(batch_size=2, names=('a', 'b'))\n_private = dict(x=1)\n")
    write(
        "COCO/sub/leaf.py",
        """
        from ...common.models.bigger import head
        from ...common import train as train_module
        from ...common.data.coco import dataloader
        from libdet.config import LazyConfig

        train = train_module.train
        train.max_iter = 20
        head.num_classes = 7
        schedule = LazyConfig.load_rel("../../common/train.py", "train")
        constant = 5  # not a dict or list: not part of the config
        """,
    )
    write("LVIS/leaf.yaml", "train:\n  max_iter: 3\n  name: lvis\nmodel:\n  _target_: torch.nn.Identity\n")
    return tmp_path

"""The model zoo (``detectron2.model_zoo`` compatible): libdet's built-in configs and the detectron2 checkpoints
trained with the same architectures.

Example::

    from libdet import model_zoo
    cfg = model_zoo.get_config("COCO/mask_rcnn_r50.py", trained=True)
    model = model_zoo.get("COCO/mask_rcnn_r50.py", trained=True)  # downloads detectron2's weights
"""

from .model_zoo import get, get_checkpoint_url, get_config, get_config_file

__all__ = ["get", "get_checkpoint_url", "get_config", "get_config_file"]

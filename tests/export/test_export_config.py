from libdet.config import get_cfg
from libdet.export import add_export_config


def test_add_export_config_adds_the_keys_and_keeps_frozen():
    cfg = get_cfg()
    cfg.freeze()
    assert add_export_config(cfg) is cfg
    assert cfg.EXPORT_CAFFE2.USE_HEATMAP_MAX_KEYPOINT is False
    assert cfg.is_frozen()

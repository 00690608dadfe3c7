import pytest

from libdet.utils.events import EventStorage


def test_count_samples_within_the_window():
    with EventStorage(start_iter=0) as storage:
        for it in range(30):
            storage.iter = it
            storage.put_scalar("every", 1.0)
            if it % 3 == 0:
                storage.put_scalar("sparse", 1.0)
        # "every": iterations 10..29 are the last 20; "sparse": 12, 15, ..., 27 are within 20 of 27.
        assert storage.count_samples("every") == 20
        assert storage.count_samples("sparse") == 7
        assert storage.count_samples("sparse", window_size=4) == 2
        with pytest.raises(KeyError, match="missing"):
            storage.count_samples("missing")

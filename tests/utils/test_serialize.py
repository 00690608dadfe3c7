import pickle

from libdet.utils.serialize import PicklableWrapper


def test_lambda_round_trips_through_pickle():
    offset = 3
    wrapped = PicklableWrapper(lambda x: x + offset)
    restored = pickle.loads(pickle.dumps(wrapped))
    assert restored(2) == 5
    assert wrapped(1) == 4


def test_attributes_are_forwarded_and_wrapping_is_idempotent():
    class Local:  # a local class: the plain pickle cannot find it by name
        scale = 2

        def __call__(self, x):
            return x * self.scale

    wrapped = PicklableWrapper(PicklableWrapper(Local()))
    assert wrapped.scale == 2 and wrapped(4) == 8
    assert not isinstance(wrapped._obj, PicklableWrapper)
    assert pickle.loads(pickle.dumps(wrapped))(5) == 10

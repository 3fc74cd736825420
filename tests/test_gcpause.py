"""``without_gc``: the collector is paused inside, enabled after, and what was built is aged, not lost."""

import gc
import weakref

from pipeline.gcpause import without_gc


class Node:
    def __init__(self):
        self.other = None


def test_paused_inside_enabled_after_and_built_objects_aged():
    seen = {}

    @without_gc
    def build():
        seen["enabled inside"] = gc.isenabled()
        return [{"i": i} for i in range(5000)]

    assert gc.isenabled()
    kept = build()
    assert seen["enabled inside"] is False and gc.isenabled()
    assert gc.get_count()[0] < 100  # the 5,000 new dicts are not left for the next young collection to walk
    assert len(kept) == 5000


def test_cycles_built_inside_are_still_collected():
    @without_gc
    def make_cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        return weakref.ref(a)

    ref = make_cycle()
    assert ref() is not None  # only a cycle keeps it: garbage, not yet collected
    gc.collect()
    assert ref() is None
    assert not gc.get_freeze_count()  # nothing left in the permanent generation


def test_nested_and_failing_calls_leave_the_collector_enabled():
    @without_gc
    def inner():
        return gc.isenabled()

    @without_gc
    def outer():
        return inner()

    assert outer() is False and gc.isenabled()

    @without_gc
    def fails():
        raise ValueError("x")

    try:
        fails()
    except ValueError:
        pass
    assert gc.isenabled()

"""Loss warm-up schedule (bmp.modeling.schedule)."""

import dataclasses

import pytest

from bmp.modeling.schedule import LossSchedule, is_active


def test_is_active_switches_exactly_at_start_iter():
    assert not is_active(1999, 2000)
    assert is_active(2000, 2000)
    assert is_active(2001, 2000)
    assert is_active(0, 0)


def test_loss_schedule_authors_defaults():
    s = LossSchedule(c2s_start=2000, s2c_start=2000, aff_start=2000, bsp_start=4000)
    assert [s.c2s(1999), s.s2c(1999), s.aff(1999), s.bsp(1999)] == [False] * 4
    assert [s.c2s(2000), s.s2c(2000), s.aff(2000), s.bsp(2000)] == [True, True, True, False]
    assert not s.bsp(3999) and s.bsp(4000)


def test_loss_schedule_terms_are_independent_and_frozen():
    s = LossSchedule(c2s_start=10, s2c_start=20, aff_start=30, bsp_start=40)
    assert [s.c2s(15), s.s2c(15), s.aff(15), s.bsp(15)] == [True, False, False, False]
    assert [s.c2s(35), s.s2c(35), s.aff(35), s.bsp(35)] == [True, True, True, False]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.c2s_start = 0

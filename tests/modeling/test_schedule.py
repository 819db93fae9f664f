"""Loss warm-up schedule (bmp.modeling.schedule)."""

import dataclasses
from pathlib import Path

import pytest

from bmp.modeling.schedule import LossSchedule, is_active

REPO = Path(__file__).resolve().parents[2]


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


def _authors_phase(n_iter: int, warm_c2s: int, warm_s2c: int, warm_bsp: int) -> tuple:
    """(c2s, s2c, aff, bsp) as the branches of their train_voc.py loop decide them."""
    if n_iter <= warm_c2s:
        terms = (False, False, False)
    elif n_iter <= warm_s2c:
        terms = (True, False, True)
    else:
        terms = (True, True, True)
    return (*terms, not n_iter < warm_bsp)


@pytest.mark.parametrize("config", ["voc/bmp_mit_b1_512_20k.yaml", "coco/bmp_mit_b1_512_80k.yaml"])
def test_shipped_configs_gate_losses_where_the_authors_loop_does(config):
    """runTrain.sh: --warm_iter_c2s 2000 (default), --warm_iter_s2c 2000, --warm_iter_bsp 4000;
    COCO scales the same warm-ups to 8000 / 16000."""
    from bmp.config import load_config
    from bmp.modeling.criterion import BMPCriterion

    cfg = load_config(str(REPO / "configs" / config), ["MODEL.WEIGHTS", ""])
    criterion = BMPCriterion(cfg)
    warm, bsp = (2000, 4000) if "voc" in config else (8000, 16000)
    for n in (0, warm - 1, warm, warm + 1, warm + 2, bsp - 1, bsp, bsp + 1):
        p = criterion.phase(n)
        assert (p.c2s, p.s2c, p.aff, p.bsp) == _authors_phase(n, warm, warm, bsp), n


def test_their_warm_iter_maps_to_start_iter_plus_one():
    # --warm_iter_c2s 2000 --warm_iter_s2c 4000 (their argparse defaults): s2c from 4001.
    s = LossSchedule(c2s_start=2001, s2c_start=4001, aff_start=2001, bsp_start=4000)
    for n in (2000, 2001, 3999, 4000, 4001):
        assert (s.c2s(n), s.s2c(n), s.aff(n), s.bsp(n)) == _authors_phase(n, 2000, 4000, 4000)


def test_loss_schedule_terms_are_independent_and_frozen():
    s = LossSchedule(c2s_start=10, s2c_start=20, aff_start=30, bsp_start=40)
    assert [s.c2s(15), s.s2c(15), s.aff(15), s.bsp(15)] == [True, False, False, False]
    assert [s.c2s(35), s.s2c(35), s.aff(35), s.bsp(35)] == [True, True, True, False]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.c2s_start = 0

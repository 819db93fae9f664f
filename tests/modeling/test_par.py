"""Pixel-adaptive refinement (bmp.modeling.par)."""

import math

import pytest
import torch
import torch.nn.functional as F

from bmp.modeling.par import PAR, par_refine


def _naive_par(image, maps, dilations, num_iter, temperature, pos_weight):
    """Per-pixel reference of the authors' PAR (un-normalised weights), in float64 Python."""
    b, _, h, w = image.shape
    c = maps.shape[1]
    img = image.double().tolist()
    ring = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    offsets = [(dy * d, dx * d) for d in dilations for dy, dx in ring]
    n = len(offsets)

    def std(values):
        mean = sum(values) / len(values)
        return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))

    def softmax(values):
        top = max(values)
        e = [math.exp(v - top) for v in values]
        return [v / sum(e) for v in e]

    def clamp(v, hi):
        return min(max(v, 0), hi - 1)

    dist = [math.hypot(dy, dx) for dy, dx in offsets]
    pos = softmax([-((d / (std(dist) + 1e-8) / temperature) ** 2) for d in dist])
    weights = {}
    for bi in range(b):
        for y in range(h):
            for x in range(w):
                logits = [0.0] * n
                for ch in range(3):
                    nb = [img[bi][ch][clamp(y + dy, h)][clamp(x + dx, w)] for dy, dx in offsets]
                    s = std(nb)
                    centre = img[bi][ch][y][x]
                    for k in range(n):
                        logits[k] -= (abs(nb[k] - centre) / (s + 1e-8) / temperature) ** 2 / 3
                colour = softmax(logits)
                weights[bi, y, x] = [colour[k] + pos_weight * pos[k] for k in range(n)]
    cur = maps.double().tolist()
    for _ in range(num_iter):
        nxt = [[[[0.0] * w for _ in range(h)] for _ in range(c)] for _ in range(b)]
        for bi in range(b):
            for y in range(h):
                for x in range(w):
                    wt = weights[bi, y, x]
                    for ci in range(c):
                        nxt[bi][ci][y][x] = sum(
                            wt[k] * cur[bi][ci][clamp(y + dy, h)][clamp(x + dx, w)]
                            for k, (dy, dx) in enumerate(offsets)
                        )
        cur = nxt
    return torch.tensor(cur, dtype=torch.float64)


@pytest.mark.parametrize("dilations", [(1, 2), (1, 2, 4, 8, 12, 24)])
def test_par_matches_naive_per_pixel_reference(dilations):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 5, 7, generator=gen, dtype=torch.float64)
    maps = torch.rand(2, 2, 5, 7, generator=gen, dtype=torch.float64)
    num_iter, w = 3, 0.01
    ours = PAR(dilations, num_iter=num_iter, color_temperature=0.3, pos_weight=w)(image, maps)
    ref = _naive_par(image, maps, dilations, num_iter, 0.3, w)
    assert torch.allclose(ours, ref, rtol=1e-9, atol=1e-12)
    # The normalised variant is the same up to the documented factor (1 + w) ** num_iter.
    normalized = PAR(dilations, num_iter, 0.3, w, normalize=True)(image, maps)
    assert torch.allclose(normalized * (1 + w) ** num_iter, ref, rtol=1e-9, atol=1e-12)


def test_par_float32_matches_float64():
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 9, 11, generator=gen, dtype=torch.float64)
    maps = torch.rand(1, 4, 9, 11, generator=gen, dtype=torch.float64)
    out64 = PAR()(image, maps)
    out32 = PAR()(image.float(), maps.float())
    assert out32.dtype == torch.float32
    assert torch.allclose(out32.double(), out64, atol=1e-5)


def test_affinity_rows_sum_to_one_plus_pos_weight():
    image = torch.rand(2, 3, 6, 8, generator=torch.Generator().manual_seed(1))
    aff = PAR().affinity(image)
    assert aff.shape == (2, 48, 6, 8)
    assert torch.allclose(aff.sum(dim=1), torch.full((2, 6, 8), 1.01), atol=1e-6)
    assert (aff > 0).all()
    normalized = PAR(normalize=True).affinity(image)
    assert torch.allclose(normalized.sum(dim=1), torch.ones(2, 6, 8), atol=1e-6)


def test_par_grows_a_constant_map_by_one_plus_w_per_round():
    image = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(2))
    maps = torch.full((2, 3, 12, 10), 0.7)
    # The authors' weights sum to 1.01: ten rounds give 0.7 * 1.01 ** 10 = 0.7732.
    assert torch.allclose(PAR()(image, maps), maps * 1.01**10, atol=1e-5)
    assert torch.allclose(PAR(num_iter=3, pos_weight=0.5)(image, maps), maps * 1.5**3, atol=1e-5)
    # Normalised weights keep it constant.
    assert torch.allclose(PAR(normalize=True)(image, maps), maps, atol=1e-5)


def test_par_keeps_probability_mass_up_to_the_growth_factor():
    gen = torch.Generator().manual_seed(4)
    image = torch.rand(2, 3, 16, 12, generator=gen)
    probs = torch.softmax(torch.randn(2, 4, 8, 6, generator=gen) * 3, dim=1)  # smaller than image
    out = PAR()(image, probs)
    assert out.shape == (2, 4, 16, 12)
    assert torch.allclose(out.sum(dim=1), torch.full((2, 16, 12), 1.01**10), atol=1e-5)
    assert (out >= 0).all()
    normalized = PAR(normalize=True)(image, probs)
    assert torch.allclose(normalized.sum(dim=1), torch.ones(2, 16, 12), atol=1e-5)


def test_maps_are_resized_with_align_corners_true():
    image = torch.rand(1, 3, 7, 9, generator=torch.Generator().manual_seed(5))
    maps = torch.rand(1, 2, 4, 5, generator=torch.Generator().manual_seed(6))
    par = PAR(num_iter=0)
    expected = F.interpolate(maps, size=(7, 9), mode="bilinear", align_corners=True)
    assert torch.allclose(par(image, maps), expected)


def _seed_spread(edge: bool):
    h, w = 24, 48
    image = torch.full((1, 3, h, w), 0.2)
    if edge:
        image[..., w // 2 :] = 0.9
    image += 0.01 * torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    fg = torch.zeros(1, 1, h, w)
    fg[..., 10:14, 4:8] = 1.0  # seed in the left half
    out = PAR()(image, torch.cat([1 - fg, fg], dim=1))[0, 1]
    return out[:, : w // 2], out[:, w // 2 :]


def test_par_propagates_within_a_region_but_not_across_a_colour_edge():
    left, right = _seed_spread(edge=True)
    # The seed reaches the whole uniform left half (its far corner too) ...
    assert left.min() > 0.3 * left.mean()
    # ... but hardly leaks across the strong colour edge (measured ratio ~1000).
    assert right.mean() < left.mean() / 100
    # Control: without the edge the same seed does reach the right half (measured ratio ~8).
    left_u, right_u = _seed_spread(edge=False)
    assert right_u.mean() > left_u.mean() / 20
    assert right_u.mean() > 50 * right.mean()


def test_par_refine_functional_matches_module():
    gen = torch.Generator().manual_seed(7)
    image = torch.rand(1, 3, 6, 6, generator=gen)
    maps = torch.rand(1, 2, 6, 6, generator=gen)
    kwargs = dict(dilations=(1, 3), num_iter=4, color_temperature=0.5, pos_weight=0.1)
    assert torch.allclose(par_refine(image, maps, **kwargs), PAR(**kwargs)(image, maps))


def test_par_position_kernel_is_cached_and_not_in_state_dict():
    par = PAR()
    a = par.position_affinity(torch.device("cpu"), torch.float32)
    assert a is par.position_affinity(torch.device("cpu"), torch.float32)
    assert a.shape == (48,) and abs(a.sum().item() - 1) < 1e-6
    # Nearer neighbours weigh more: dilation 1 beats dilation 24.
    assert a[0] < a[1] and a[1] > a[-1]
    assert len(par.state_dict()) == 0


def test_par_works_under_autograd():
    image = torch.rand(1, 3, 6, 6, requires_grad=True)
    maps = torch.rand(1, 2, 6, 6, requires_grad=True)
    PAR(num_iter=2)(image, maps).square().sum().backward()
    assert maps.grad is not None and torch.isfinite(maps.grad).all()
    assert image.grad is not None and torch.isfinite(image.grad).all()


def test_par_rejects_bad_inputs():
    with pytest.raises(ValueError, match="DILATIONS"):
        PAR(dilations=())
    with pytest.raises(ValueError, match="RGB"):
        PAR()(torch.rand(1, 1, 4, 4), torch.rand(1, 2, 4, 4))
    with pytest.raises(ValueError, match="255"):
        PAR()(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), torch.rand(1, 2, 4, 4))
    with pytest.raises(ValueError, match="batch"):
        PAR()(torch.rand(2, 3, 4, 4), torch.rand(1, 2, 4, 4))

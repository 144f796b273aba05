"""The fill-quality measures: the ground truth scores perfectly, noise and smears do not."""

from __future__ import annotations

import numpy as np
import pytest

from fluxnb.server.engines.fill_metrics import delta_e, mean_delta_e, patch_distance, texture_ratio

SIZE = 96


def _texture(seed: int) -> np.ndarray:
    """A brick-like pattern with grain: rows of coloured blocks, offset every other row."""
    rng = np.random.default_rng(seed)
    img = np.full((SIZE, SIZE, 3), (190, 185, 175), np.float32)
    for row, y in enumerate(range(0, SIZE, 8)):
        for x in range(-4 * (row % 2), SIZE, 16):
            img[y + 1:y + 8, max(0, x + 1):max(0, x + 16)] = (150, 60, 45) + rng.normal(0, 10, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture()
def case() -> tuple[np.ndarray, np.ndarray]:
    hole = np.zeros((SIZE, SIZE), bool)
    hole[24:72, 24:72] = True
    return _texture(0), hole


def _fill(truth: np.ndarray, hole: np.ndarray, content: np.ndarray) -> np.ndarray:
    return np.where(hole[..., None], content, truth).astype(np.uint8)


def _noise(truth: np.ndarray, hole: np.ndarray, seed: int = 1) -> np.ndarray:
    """Noise with the surroundings' mean and 1.5x their std: more 'texture' than the original."""
    pixels = truth[~hole].astype(np.float32)
    z = np.random.default_rng(seed).standard_normal((*hole.shape, 1))  # one field: grey noise
    return _fill(truth, hole, np.clip(pixels.mean(0) + 1.5 * pixels.std(0) * z, 0, 255))


def test_the_ground_truth_scores_perfectly(case: tuple[np.ndarray, np.ndarray]) -> None:
    truth, hole = case
    assert texture_ratio(truth, truth, hole) == 1.0
    assert patch_distance(truth, truth, hole) == 0.0
    assert delta_e(truth, truth, hole) == 0.0
    assert mean_delta_e(truth, truth, hole) == 0.0


def test_noise_buys_texture_but_not_patches(case: tuple[np.ndarray, np.ndarray]) -> None:
    truth, hole = case
    noise = _noise(truth, hole)
    plausible = _fill(truth, hole, _texture(7))        # the same kind of texture, other bricks
    assert texture_ratio(noise, truth, hole) > 1.0
    assert texture_ratio(plausible, truth, hole) > 0.8
    assert patch_distance(noise, truth, hole) > 2 * patch_distance(plausible, truth, hole)


def test_a_smear_fails_both_texture_and_patches(case: tuple[np.ndarray, np.ndarray]) -> None:
    truth, hole = case
    smear = _fill(truth, hole, truth[~hole].mean(0))   # the mean colour: what a blur tends to
    plausible = _fill(truth, hole, _texture(7))
    assert texture_ratio(smear, truth, hole) < 0.5
    assert patch_distance(smear, truth, hole) > 1.5 * patch_distance(plausible, truth, hole)
    # a pixel-aligned colour error prefers the smear: why it is not the quality measure
    assert delta_e(smear, truth, hole) < delta_e(plausible, truth, hole) * 1.5


def test_patch_distance_is_deterministic_and_sampled(case: tuple[np.ndarray, np.ndarray]) -> None:
    truth, hole = case
    noise = _noise(truth, hole)
    assert patch_distance(noise, truth, hole, samples=500) == patch_distance(noise, truth, hole, samples=500)
    assert patch_distance(noise, truth, hole, size=5) > 0


def test_bad_inputs_name_the_problem(case: tuple[np.ndarray, np.ndarray]) -> None:
    truth, hole = case
    with pytest.raises(ValueError, match=r"fill \(96, 96, 3\) and truth \(48, 48, 3\)"):
        texture_ratio(truth, truth[:48, :48], hole)
    with pytest.raises(ValueError, match=r"hole \(10, 10\) must be the image's HxW"):
        delta_e(truth, truth, np.ones((10, 10), bool))
    with pytest.raises(ValueError, match="hole is empty"):
        patch_distance(truth, truth, np.zeros_like(hole))
    with pytest.raises(ValueError, match="size=4 must be an odd number"):
        patch_distance(truth, truth, hole, size=4)


def test_a_flat_original_has_no_texture_ratio() -> None:
    flat = np.full((16, 16, 3), 100, np.uint8)
    assert np.isnan(texture_ratio(flat, flat, np.ones((16, 16), bool)))

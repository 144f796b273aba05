"""Sweep axes and planning: pure, no server."""

from __future__ import annotations

import io

import numpy as np
import pytest

from fluxnb.errors import ValidationError
from fluxnb.sweeps import SweepTooLargeError, build_plan, parse_values
from fluxnb.sweeps.axes import axis_values, grid, resolve_seeds, sample_cells

URLS = {"prompt": "p", "image_url": "https://x/i.png", "mask_url": "https://x/m.png"}


@pytest.mark.parametrize(("text", "values"), [
    ("1-5", [1, 2, 3, 4, 5]),
    ("1-5 (+2)", [1, 3, 5]),
    ("10-1 (-3)", [10, 7, 4, 1]),
    ("1-10 [5]", [1, 3, 5, 7, 10]),            # as A1111: np.linspace(...).astype(int)
    ("0.5-1 [3]", [0.5, 0.75, 1.0]),
    ("0-1 (+0.25)", [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("2, 4,8", [2, 4, 8]),
    ("3.5, 1-2", [3.5, 1, 2]),
])
def test_a1111_ranges(text: str, values: list[float]) -> None:
    assert parse_values(text) == values


@pytest.mark.parametrize("text", ["", "1-5 (+0)", "1-5 (-1)", "1-5 [0]"])
def test_bad_ranges_raise(text: str) -> None:
    with pytest.raises(ValueError):
        parse_values(text)


def test_axis_values_from_lists_numpy_and_strings() -> None:
    assert axis_values("strength", np.linspace(0.5, 1.0, 3)) == [0.5, 0.75, 1.0]
    assert all(type(v) is float for v in axis_values("strength", np.linspace(0.5, 1.0, 3)))
    assert axis_values("steps", np.arange(4, 13, 4)) == [4, 8, 12]
    assert axis_values("steps", range(1, 4)) == [1, 2, 3]
    assert axis_values("steps", "4-8 (+4)") == [4, 8]
    assert axis_values("prompt", "a cat, a dog") == ["a cat, a dog"]   # text: one value
    assert axis_values("prompt", ["a cat", "a dog"]) == ["a cat", "a dog"]


def test_grid_order_first_axis_outermost() -> None:
    cells = grid({"a": [1, 2], "b": ["x", "y", "z"]})
    assert [(c["a"], c["b"]) for c in cells] == [
        (1, "x"), (1, "y"), (1, "z"), (2, "x"), (2, "y"), (2, "z")]


def test_plan_grid_size_order_and_aliases() -> None:
    plan = build_plan(URLS, {"steps": "1-3", "guidance": [2.0, 5.0], "strength": [0.5, 0.9]})
    assert list(plan.axes) == ["num_inference_steps", "guidance_scale", "strength"]
    assert len(plan.cells) == 12 and plan.n_grid == 12
    assert [c.index for c in plan.cells] == list(range(12))
    assert [c.params["num_inference_steps"] for c in plan.cells] == [1] * 4 + [2] * 4 + [3] * 4
    assert [c.params["strength"] for c in plan.cells[:4]] == [0.5, 0.9, 0.5, 0.9]
    assert plan.cells[5].inputs["guidance_scale"] == 2.0 and plan.cells[5].inputs["strength"] == 0.9
    assert len({c.key for c in plan.cells}) == 12


def test_random_sample_is_seeded_and_in_grid_order() -> None:
    a = build_plan(URLS, {"steps": "1-10", "strength": [0.5, 1.0]}, sample=5, random_state=3)
    b = build_plan(URLS, {"steps": "1-10", "strength": [0.5, 1.0]}, sample=5, random_state=3)
    c = build_plan(URLS, {"steps": "1-10", "strength": [0.5, 1.0]}, sample=5, random_state=4)
    assert [x.index for x in a.cells] == [x.index for x in b.cells]
    assert [x.index for x in a.cells] != [x.index for x in c.cells]
    assert len(a.cells) == 5 and [x.index for x in a.cells] == sorted(x.index for x in a.cells)
    assert sample_cells(4, 10, 0) == [0, 1, 2, 3]


def test_seed_policies() -> None:
    axes = {"steps": [1, 2, 3]}
    fixed = build_plan(URLS, axes)
    assert len({c.seed for c in fixed.cells}) == 1
    assert build_plan(URLS, axes).cells[0].seed == fixed.cells[0].seed   # same sweep, same seed
    assert {c.seed for c in build_plan({**URLS, "seed": 42}, axes).cells} == {42}
    assert [c.seed for c in build_plan(URLS, axes, seeds=7).cells] == [7, 7, 7]
    per_cell = [c.seed for c in build_plan(URLS, axes, seeds="per_cell").cells]
    assert len(set(per_cell)) == 3
    assert [c.seed for c in build_plan(URLS, axes, seeds=[5, 6, 7]).cells] == [5, 6, 7]
    assert [c.inputs["seed"] for c in build_plan(URLS, axes, seeds=[5, 6, 7]).cells] == [5, 6, 7]
    other = [c.seed for c in build_plan(URLS, axes, seeds="per_cell", random_state=99).cells]
    assert other != per_cell
    with pytest.raises(ValueError, match="one seed per cell"):
        build_plan(URLS, axes, seeds=[1, 2])
    with pytest.raises(ValueError, match="seed policy"):
        resolve_seeds(2, "sometimes")


def test_seed_axis_is_the_seed_and_excludes_a_policy() -> None:
    plan = build_plan(URLS, {"seed": [1, 2], "steps": [4, 8]})
    assert [c.seed for c in plan.cells] == [1, 1, 2, 2]
    with pytest.raises(ValueError, match="seed is an axis"):
        build_plan(URLS, {"seed": [1, 2]}, seeds="per_cell")


def test_invalid_cells_are_named_before_anything_is_sent() -> None:
    with pytest.raises(ValidationError) as info:
        build_plan(URLS, {"steps": [10, 60], "strength": [0.5, 1.5]})
    text = str(info.value)
    assert "cell 1 (num_inference_steps=10, strength=1.5)" in text
    assert "cell 2 (num_inference_steps=60, strength=0.5)" in text
    assert "num_inference_steps=60 is out of range" in text and "strength=1.5" in text
    assert "cell 0" not in text


def test_unknown_axis_suggests_a_name() -> None:
    with pytest.raises(ValueError, match="did you mean 'strength'"):
        build_plan(URLS, {"strenght": [0.5]})


def test_lora_scale_axis_sets_every_lora() -> None:
    base = {**URLS, "loras": [{"path": "https://x/a.safetensors", "scale": 1.0},
                              {"path": "https://x/b.safetensors"}]}
    plan = build_plan(base, {"lora_scale": [0.5, 2.0]})
    assert [[lo["scale"] for lo in c.inputs["loras"]] for c in plan.cells] == [[0.5, 0.5], [2.0, 2.0]]
    assert plan.cells[1].columns()["lora_scale"] == 2.0
    with pytest.raises(ValueError, match="needs base_inputs"):
        build_plan(URLS, {"lora_scale": [0.5]})


def test_images_are_keyed_by_content() -> None:
    from PIL import Image

    img1 = Image.new("RGB", (8, 8), (10, 20, 30))
    img2 = Image.new("RGB", (8, 8), (10, 20, 30))
    img3 = Image.new("RGB", (8, 8), (99, 20, 30))
    mask = Image.new("L", (8, 8), 255)
    key = lambda img: build_plan({"prompt": "p", "image_url": img, "mask_url": mask}, {}).cells[0]  # noqa: E731
    assert key(img1).key == key(img2).key != key(img3).key
    cell = key(img1)
    assert cell.columns()["image_url"].startswith("sha256:") and len(cell.columns()["image_url"]) < 24
    assert cell.inputs["image_url"].startswith("data:image/png;base64,")


def test_mask_variants_axis() -> None:
    from PIL import Image

    masks = [Image.new("L", (8, 8), 255), Image.new("L", (8, 8), 128)]
    plan = build_plan({"prompt": "p", "image_url": Image.new("RGB", (8, 8))}, {"mask": masks})
    labels = [c.params["mask_url"] for c in plan.cells]
    assert len(set(labels)) == 2 and all(label.startswith("sha256:") for label in labels)
    assert plan.axes["mask_url"] == labels


def test_preflight_refuses_a_cell_with_an_empty_mask() -> None:
    from PIL import Image

    image = Image.new("RGB", (8, 8))
    red = Image.new("RGB", (8, 8))
    red.paste((255, 0, 0), (2, 2, 6, 6))
    masks = [Image.new("L", (8, 8), 255), red, np.zeros((8, 8), np.uint8)]
    with pytest.raises(ValidationError) as info:
        build_plan({"prompt": "p", "image_url": image}, {"mask": masks, "steps": [4]})
    text = str(info.value)
    assert "cell 0" not in text
    assert "cell 1 (mask_url='sha256:" in text and "steps=4" in text
    assert "the brightest mask pixel is 76" in text and "fluxnb.mask_threshold" in text
    assert "cell 2 (mask_url=" in text and "the brightest mask pixel is 0" in text
    assert info.value.fields == ["mask_url", "mask_url"]
    # a 0/1 array is a binary mask, not an empty one
    seg = np.zeros((8, 8), np.uint8)
    seg[2:6, 2:6] = 1
    assert len(build_plan({"prompt": "p", "image_url": image, "mask_url": seg}, {}).cells) == 1


def test_preflight_refuses_a_mask_of_another_aspect_ratio_and_resizes_one_of_the_same() -> None:
    from PIL import Image

    from fluxnb.datauri import decode_data_uri
    from fluxnb.masks import MaskMismatchError

    tall, wide = Image.new("RGB", (64, 75)), Image.new("RGB", (75, 64))
    mask = Image.new("L", (75, 64), 255)
    with pytest.raises(MaskMismatchError) as info:
        build_plan({"prompt": "p", "mask_url": mask}, {"image": [wide, tall]})
    text = str(info.value)
    assert "cell 0" not in text and "cell 1 (image_url='sha256:" in text
    assert "75x64" in text and "64x75" in text and info.value.fields == ["mask_url"]
    small = Image.new("L", (15, 8), 0)
    small.paste(255, (0, 0, 4, 4))
    plan = build_plan({"prompt": "p", "image_url": Image.new("RGB", (30, 16)), "mask_url": small}, {})
    sent = Image.open(io.BytesIO(decode_data_uri(plan.cells[0].inputs["mask_url"])[1]))
    assert sent.size == (30, 16) and plan.cells[0].images["mask_url"].size == (30, 16)


def test_preflight_cost_time_and_max_jobs() -> None:
    plan = build_plan({**URLS, "image_size": "square_hd", "num_images": 2}, {"steps": "1-30"},
                      seconds_per_job=10.0)
    pre = plan.preflight(concurrency=10)
    assert pre.jobs == 30 and pre.images == 60
    assert pre.megapixels == pytest.approx(60 * 1024 * 1024 / 1e6)
    assert pre.cost == pytest.approx(60 * 1.048576 * 0.035)
    assert pre.seconds == pytest.approx(30.0)           # 3 waves of 10 jobs, 10 s each
    assert "30 jobs" in str(pre) and "$2.20" in str(pre)
    cheap = build_plan({**URLS, "image_size": "square_hd"}, {"steps": [1]},
                       price_per_megapixel=1.0).preflight(concurrency=1)
    assert cheap.cost == pytest.approx(1.048576)
    plan.check_size(pre, max_jobs=30)
    plan.check_size(pre, max_jobs=None)
    with pytest.raises(SweepTooLargeError, match=r"30 jobs .* max_jobs=29\. To go ahead pass max_jobs=30"):
        plan.check_size(pre, max_jobs=29)


def test_preflight_on_a_free_backend_names_no_cost() -> None:
    plan = build_plan({**URLS, "image_size": "square_hd"}, {"steps": "1-30"}, seconds_per_job=10.0)
    free = plan.preflight(concurrency=10, priced=False)
    assert free.cost == pytest.approx(30 * 1.048576 * 0.035)   # still computed, just not shown
    text = str(free)
    assert text.startswith("sweep: 30 jobs (30 images, 31.5 MP); est. time ~30 s")
    assert "cost" not in text and "$" not in text
    with pytest.raises(SweepTooLargeError) as info:
        plan.check_size(free, max_jobs=29)
    assert "$" not in str(info.value) and "30 jobs (~30 s)" in str(info.value)
    assert "est. cost $1.10" in str(plan.preflight(concurrency=10))    # priced: fal.ai

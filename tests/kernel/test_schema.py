"""The inpainting schema (fal-protocol §13): defaults, ranges and error messages."""

from __future__ import annotations

import pytest

from fluxnb.errors import ValidationError
from fluxnb.schema import (
    ENDPOINT_ID,
    IMAGE_SIZE_PRESETS,
    INPUT_FIELDS,
    LORA_SCALE,
    MAX_IMAGE_SIDE,
    output_problems,
    resolve_image_size,
    validate_input,
)

BASE = {"prompt": "a red cat", "image_url": "https://x/i.png", "mask_url": "data:image/png;base64,AA=="}


def errors_of(body, **kwargs):
    with pytest.raises(ValidationError) as info:
        validate_input(body, **kwargs)
    return info.value


def test_endpoint_id():
    assert ENDPOINT_ID == "fal-ai/flux-lora/inpainting"


@pytest.mark.parametrize(
    "name, default, lo, hi",
    [
        ("num_inference_steps", 28, 1, 50),
        ("guidance_scale", 3.5, 0, 35),
        ("strength", 0.85, 0.01, 1),
        ("num_images", 1, 1, 4),
    ],
)
def test_numeric_defaults_and_ranges(name, default, lo, hi):
    spec = INPUT_FIELDS[name]
    assert (spec.default, spec.minimum, spec.maximum) == (default, lo, hi)
    filled = validate_input(BASE, fill_defaults=True)
    assert filled[name] == default
    assert validate_input({**BASE, name: lo})[name] == lo
    assert validate_input({**BASE, name: hi})[name] == hi


def test_other_defaults():
    filled = validate_input(BASE, fill_defaults=True)
    assert filled["output_format"] == "jpeg"
    assert filled["enable_safety_checker"] is True
    assert filled["sync_mode"] is False
    assert filled["loras"] == []
    assert "seed" not in filled and "image_size" not in filled  # no default: random / input size
    assert validate_input(BASE) == BASE  # without fill_defaults nothing is added


@pytest.mark.parametrize(
    "name, bad, allowed",
    [
        ("num_inference_steps", 51, "1 to 50"),
        ("num_inference_steps", 0, "1 to 50"),
        ("guidance_scale", 35.5, "0 to 35"),
        ("guidance_scale", -1, "0 to 35"),
        ("strength", 1.5, "0.01 to 1"),
        ("strength", 0.0, "0.01 to 1"),
        ("num_images", 5, "1 to 4"),
    ],
)
def test_out_of_range_names_field_value_and_range(name, bad, allowed):
    err = errors_of({**BASE, name: bad})
    msg = str(err)
    assert name in msg and str(bad) in msg and allowed in msg
    assert err.fields == [name]
    assert err.errors[0]["loc"] == ["body", name]


@pytest.mark.parametrize(
    "name, bad, words",
    [
        ("num_inference_steps", 2.5, "must be an integer"),
        ("num_inference_steps", "10", "must be an integer"),
        ("num_images", True, "must be an integer"),
        ("strength", "high", "must be a finite number"),
        ("guidance_scale", float("nan"), "must be a finite number"),
        ("enable_safety_checker", "yes", "must be true or false"),
        ("output_format", "webp", "one of jpeg, png"),
        ("image_url", "ftp://x/y.png", "not an http(s) URL or a data URI"),
    ],
)
def test_type_errors_name_field_and_value(name, bad, words):
    msg = str(errors_of({**BASE, name: bad}))
    assert name in msg and words in msg
    assert str(bad)[:8] in msg


def test_string_type_error():
    err = errors_of({**BASE, "prompt": 42})
    assert "prompt must be a string, not int" in str(err)
    assert err.errors[0]["input"] == 42  # the value travels in the item (the message names its type)


def test_integral_float_is_accepted_as_integer():
    assert validate_input({**BASE, "num_inference_steps": 20.0})["num_inference_steps"] == 20


@pytest.mark.parametrize("missing", ["prompt", "image_url", "mask_url"])
def test_required_fields(missing):
    body = {k: v for k, v in BASE.items() if k != missing}
    err = errors_of(body)
    assert err.fields == [missing] and "required" in str(err)


def test_unknown_field_did_you_mean():
    err = errors_of({**BASE, "num_inference_step": 10})
    assert "unknown field 'num_inference_step'" in str(err)
    assert "did you mean 'num_inference_steps'" in str(err)
    assert validate_input({**BASE, "junk": 1}, allow_unknown=True) == BASE


def test_all_errors_reported_together():
    err = errors_of({"prompt": "p", "strength": 3, "num_images": 9})
    assert set(err.fields) == {"strength", "num_images", "image_url", "mask_url"}


def test_null_optional_means_default():
    assert "seed" not in validate_input({**BASE, "seed": None})


def test_seed_range():
    assert validate_input({**BASE, "seed": 0})["seed"] == 0
    msg = str(errors_of({**BASE, "seed": -1}))
    assert "seed" in msg and "-1" in msg


def test_loras():
    loras = [{"path": "https://x/l.safetensors"}, {"path": "a/b", "scale": 4}]
    out = validate_input({**BASE, "loras": loras})
    assert out["loras"] == [{"path": "https://x/l.safetensors", "scale": LORA_SCALE.default},
                            {"path": "a/b", "scale": 4.0}]
    msg = str(errors_of({**BASE, "loras": [{"path": "a/b", "scale": 4.5}]}))
    assert "loras[0].scale=4.5" in msg and "0 to 4" in msg
    assert "loras[0].path" in str(errors_of({**BASE, "loras": [{"scale": 1}]}))
    assert "unknown field 'weight'" in str(errors_of({**BASE, "loras": [{"path": "a", "weight": 1}]}))
    assert "must be a list" in str(errors_of({**BASE, "loras": "a/b"}))


def test_image_size():
    for preset in IMAGE_SIZE_PRESETS:
        assert validate_input({**BASE, "image_size": preset})["image_size"] == preset
    assert validate_input({**BASE, "image_size": {"width": 640, "height": 480}})["image_size"] == \
        {"width": 640, "height": 480}
    msg = str(errors_of({**BASE, "image_size": "huge"}))
    assert "image_size='huge'" in msg and "square_hd" in msg
    msg = str(errors_of({**BASE, "image_size": {"width": MAX_IMAGE_SIDE + 1, "height": 10}}))
    assert "image_size.width" in msg and str(MAX_IMAGE_SIDE + 1) in msg and f"1 to {MAX_IMAGE_SIDE}" in msg
    assert "unknown field 'depth'" in str(errors_of({**BASE, "image_size": {"width": 1, "depth": 2}}))
    assert resolve_image_size(None, (3, 4)) == (3, 4)
    assert resolve_image_size("portrait_4_3", (3, 4)) == (768, 1024)
    assert resolve_image_size({"width": 10, "height": 20}, (3, 4)) == (10, 20)


def test_body_must_be_object():
    assert "JSON object" in str(errors_of(["not", "a", "dict"]))


def test_long_values_are_shortened_in_errors():
    long_uri = "ftp://" + "x" * 500
    err = errors_of({**BASE, "image_url": long_uri})
    assert len(str(err)) < 300


def test_output_problems():
    good = {"images": [{"url": "u", "width": 1, "height": 1, "content_type": "image/png"}],
            "timings": {}, "seed": 1, "has_nsfw_concepts": [False], "prompt": "p"}
    assert output_problems(good) == []
    assert "missing field 'seed'" in output_problems({k: v for k, v in good.items() if k != "seed"})
    assert output_problems({**good, "images": [{"url": "u"}]})[0].startswith("images[0] has no")


# -- one alias table, one prompt rule, one price (issue 9, item 10) ----------------------------


def test_aliases_are_derived_from_each_fields_short_name():
    from fluxnb.schema import ALIASES

    assert ALIASES["steps"] == "num_inference_steps" and ALIASES["guidance"] == "guidance_scale"
    assert ALIASES["cfg"] == "guidance_scale" and ALIASES["images"] == "num_images"
    assert (ALIASES["image"], ALIASES["mask"], ALIASES["size"]) == ("image_url", "mask_url", "image_size")
    derived = {a: f.name for f in INPUT_FIELDS.values() for a in (f.short, *f.aliases)
               if a and a != f.name}
    assert dict(ALIASES) == derived
    assert not set(ALIASES) & set(INPUT_FIELDS)          # no alias shadows a field


def test_every_alias_user_reads_the_schema_table():
    """Sweep axes, display titles, sheet labels, panel history and the CLI caption: one table."""
    from fluxnb.display import param_title
    from fluxnb.schema import ALIASES, short_name
    from fluxnb.sweeps import axes, labels
    from fluxnb.widgets.history import RunHistory

    assert axes.ALIASES is ALIASES
    assert all(axes.canonical_name(alias) == name for alias, name in ALIASES.items())
    assert param_title({"steps": 8, "images": 2, "cfg": 4.0}) == "steps=8 · guidance=4 · images=2"
    assert param_title({"num_images": 3}) == "images=3"
    assert labels.axis_label("guidance_scale", 3.5) == "guidance=3.5"
    history = RunHistory()
    history.start({"prompt": "p", "num_images": 2, "output_format": "png"})
    columns = list(history.to_frame().columns)
    assert {short_name(n) for n in ("num_inference_steps", "num_images", "output_format",
                                    "enable_safety_checker")} <= set(columns)
    assert history.to_rows()[0]["images"] == 2 and history.to_rows()[0]["format"] == "png"


def test_short_name_and_flag_for():
    from fluxnb.schema import flag_for, short_name

    assert short_name("num_inference_steps") == short_name("steps") == "steps"
    assert short_name("strength") == "strength" and short_name("lora_scale") == "lora_scale"
    assert flag_for("num_inference_steps") == flag_for("steps") == "--steps"
    assert flag_for("num_images") == "--num-images" and flag_for("output_format") == "--format"
    assert flag_for("image_url") == "--image" and flag_for("loras") == "--lora"
    assert flag_for("sync_mode") is None and flag_for("nope") is None


def test_resolve_aliases_and_a_clash():
    from fluxnb.schema import resolve_aliases

    assert resolve_aliases({"steps": 4, "mask": "m", "prompt": "p"}) == {
        "num_inference_steps": 4, "mask_url": "m", "prompt": "p"}
    with pytest.raises(ValidationError) as info:
        resolve_aliases({"guidance": 3.0, "cfg": 4.0})
    assert info.value.fields == ["guidance_scale"]
    assert "guidance=3.0 and cfg=4.0 both set guidance_scale" in str(info.value)


def test_the_server_side_schema_names_the_full_field_for_an_alias():
    err = errors_of({**BASE, "steps": 4})
    assert "did you mean 'num_inference_steps'?" in str(err)


@pytest.mark.parametrize("prompt", ["", " ", "\t\n"])
def test_a_blank_prompt_is_refused_naming_prompt(prompt):
    err = errors_of({**BASE, "prompt": prompt})
    assert err.fields == ["prompt"] and err.errors[0]["type"] == "string_too_short"
    assert "prompt is empty: say what to paint in the masked area" in str(err)


def test_one_price_for_the_sweep_and_the_cost_warning():
    from fluxnb.schema import COST_WARNING_USD, PRICE_PER_MEGAPIXEL, estimate_cost
    from fluxnb.sweeps.plan import Plan

    assert PRICE_PER_MEGAPIXEL == 0.035 and Plan.price_per_megapixel == PRICE_PER_MEGAPIXEL
    assert estimate_cost(6000, 4000, 4) == pytest.approx(3.36)
    assert estimate_cost(1024, 1024, 4) < COST_WARNING_USD <= estimate_cost(6000, 4000, 4)

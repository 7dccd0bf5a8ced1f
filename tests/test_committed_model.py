"""The trained model the README's first commands use: committed under results/, usable right after install."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import data
import models
import predict_image
import results
import rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, results.RESULTS_DIR)
# The report's parameter counts (Figures 2 and 3), written out rather than read from the builders.
PARAMETERS = {"vgg16": 1_186_346, "alexnet": 2_915_338}


def records_with_a_model():
    return sorted(os.path.join(RESULTS, name) for name in os.listdir(RESULTS)
                  if os.path.isfile(os.path.join(RESULTS, name, rundir.MODEL_FILE)))


def test_a_trained_vgg16_is_committed_and_named_in_the_readme():
    folders = records_with_a_model()
    assert any(rundir.model_name(folder) == "vgg16" for folder in folders), folders
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert any(f"python predict_image.py results/{os.path.basename(folder)} " in readme for folder in folders)


@pytest.mark.parametrize("folder", records_with_a_model(), ids=os.path.basename)
def test_the_committed_model_loads_and_classifies_a_photo(folder, tmp_path, capsys):
    name = rundir.model_name(folder)
    model = models.load_model(folder)
    assert model.count_params() == PARAMETERS[name]
    assert getattr(model, "optimizer", None) is None  # an inference copy: no optimizer state
    assert os.path.getsize(os.path.join(folder, rundir.MODEL_FILE)) < 8_000_000
    config = json.load(open(os.path.join(folder, rundir.CONFIG_FILE)))
    assert config["record"]["with_model"] is True and config["parameters"] == PARAMETERS[name]

    # A red-and-white photo of odd size, through the command a user runs.
    pixels = np.zeros((48, 64, 3), np.uint8)
    pixels[:, :, 0] = 200
    pixels[::4] = 255
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    assert predict_image.main([folder, str(tmp_path / "photo.png"), "--json", "--tta", "flip-translate"]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    probabilities = np.array([result["probabilities"][label] for label in data.CLASS_NAMES])
    assert probabilities.sum() == pytest.approx(1, abs=1e-4) and result["predicted"] in data.CLASS_NAMES


@pytest.mark.parametrize("recipe, record", [("long", "vgg16_long_80ep_split0"),
                                            ("short", "vgg16_short_wd5e-3_30ep"),
                                            ("ten", "vgg16_short_pad2_10ep"),
                                            ("short", "alexnet_nesterov_wd5e-4_pad2_b128_30ep")])
def test_a_records_recipe_is_that_records_settings(recipe, record):
    # `--recipe long`, `short` and `ten` each claim to train exactly what a committed record
    # trained: every setting the record saved, resolved as train.py resolves it (precision
    # auto and the seed are the machine's and the user's), equals the recipe's.
    import dataclasses

    import recipes
    config = json.load(open(os.path.join(RESULTS, record, rundir.CONFIG_FILE)))
    saved = config["settings"]
    settings = recipes.resolve_settings(config["model"], dataclasses.replace(
        recipes.recipe_settings(recipe, config["model"]), seed=saved["seed"], precision=saved["precision"]))
    differing = {key: (value, getattr(settings, key)) for key, value in saved.items()
                 if key != "recipe" and getattr(settings, key) != value}
    assert differing == {}
    # Settings added after the record was made are at their defaults in the recipe: the run predates them.
    for field in dataclasses.fields(recipes.Settings):
        if field.name not in saved:
            assert getattr(settings, field.name) == field.default, field.name

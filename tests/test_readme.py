"""The README's promises: its results table is `results.py table`'s, a record stands behind each
row, and every command it shows runs (in smoke form: a few images, one epoch, synthetic data)."""
import importlib
import os
import re
import shlex

import numpy as np
import pytest
from PIL import Image

import results
import rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, results.RESULTS_DIR)
TABLE_MARKER = "<!-- results: regenerate with python results.py table -->"
README_LIMIT = 12_500  # bytes: a front door read in two minutes, not a lab notebook


def readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        return handle.read()


def readme_commands():
    """Every `python SCRIPT.py ...` the README shows, in its code blocks and inline, once each."""
    text = readme()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            found += [part.strip() for part in line.split("#")[0].split("&&")]
    found += re.findall(r"`(python [\w/]+\.py[^`]*)`", text)
    commands = [" ".join(command.split()) for command in found if re.match(r"python [\w/]+\.py\b", command)]
    # A command shown with and without `--data-dir DIR` is one command: the tests always give the data.
    unique = {}
    for command in commands:
        unique.setdefault(command.replace(" --data-dir DIR", ""), command)
    return list(unique.values())


def table_rows():
    """The README's results table as (network, command, [record names]) per row."""
    lines = readme().split(TABLE_MARKER + "\n", 1)[1].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        rows.append((cells[0], cells[1].strip("`"), re.findall(r"`([^`]+)`", cells[-1])))
    return rows


def test_the_readme_is_a_front_door():
    text = readme()
    assert len(text.encode("utf-8")) <= README_LIMIT
    assert text.count("![") == 1  # one figure (how the work went: test_repository.py, for every file)


def test_the_readme_table_is_results_table_output(capsys):
    assert results.main(["--results-dir", RESULTS, "table"]) == 0
    printed = capsys.readouterr().out
    assert TABLE_MARKER in readme(), "the README has lost its table's marker"
    assert readme().split(TABLE_MARKER + "\n", 1)[1].startswith(printed), (
        "README.md's results table differs from `python results.py table`: paste its output under the marker")


def test_a_record_of_its_recipe_stands_behind_each_row():
    rows = table_rows()
    assert 2 <= len(rows) <= 8
    for network, command, names in rows:
        # Each row's command is one a user types: the network and at most a recipe, no flag.
        match = re.fullmatch(r"python train\.py (\w+)(?: --recipe (\w+))?", command)
        assert match and match.group(1) == network, command
        assert names, f"no record named in the row of {command}"
        for name in names:
            config, _, metrics = results.read_record(os.path.join(RESULTS, name))
            assert config["model"] == network and results.recipe_of(config) == (match.group(2) or "paper"), name
            assert metrics["test_images"] == 10_000
    assert {network for network, _, _ in rows} == {"vgg16", "alexnet"}
    assert [command for _, command, _ in rows[:2]] == ["python train.py vgg16", "python train.py alexnet"]


def test_every_top_level_record_is_in_the_table_and_the_pilots_are_indexed():
    records = sorted(name for name in os.listdir(RESULTS) if results.is_record(os.path.join(RESULTS, name)))
    assert len(records) <= 20, records
    table = results.table(RESULTS)
    assert "Not in the table" not in table  # each is re-runnable with the command its row prints
    assert all(f"`{name}`" in table for name in records)
    pilots = os.path.join(RESULTS, "pilots")
    with open(os.path.join(pilots, "README.md"), encoding="utf-8") as handle:
        indexed = re.findall(r"^- `([^`]+)`: ", handle.read(), re.MULTILINE)
    folders = sorted(name for name in os.listdir(pilots) if os.path.isdir(os.path.join(pilots, name)))
    assert sorted(indexed) == folders
    for name in folders:  # compact: the three files, no model
        assert sorted(os.listdir(os.path.join(pilots, name))) == sorted(results.RECORD_FILES), name


def test_the_readme_shows_the_commands_a_newcomer_needs():
    commands = readme_commands()
    scripts = {command.split()[1] for command in commands}
    assert {"train.py", "evaluate.py", "predict_image.py", "plots.py", "results.py"} <= scripts
    assert "python results.py table" in commands
    assert any(command.startswith("python predict_image.py results/") for command in commands)


# What each script needs added to run in a few seconds on the tests' synthetic data; the
# README's own flags stay, so a renamed flag or recipe shows here.
SMOKE = {"train": ["--limit", "64", "--epochs", "1"], "evaluate": ["--limit", "40"],
         "bench": ["--images", "64", "--repeats", "1", "--no-predict"]}  # prediction: test_augment's bench test
NEEDS_DATA = ("train", "evaluate", "bench", "data")


@pytest.mark.parametrize("command", readme_commands())
def test_each_readme_command_runs(command, cifar_dir, tmp_path, monkeypatch, capsys):
    """The command, run as `main(argv)` in an empty folder (its runs/ and figures land there), on
    the synthetic data and the committed records; `DIR` is the data folder a user would name."""
    words = shlex.split(command)
    script = words[1][:-len(".py")]
    argv = []
    for previous, word in zip([None] + words[2:], words[2:]):
        if word == "DIR":
            word = cifar_dir
        elif word.startswith("results/") and previous != "--out" and os.path.exists(os.path.join(ROOT, word)):
            word = os.path.join(ROOT, word)  # a committed record, read only
        elif re.fullmatch(r"[\w.-]+\.(jpg|jpeg|png)", word):
            pixels = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / word)  # your photo
        argv.append(word)
    if script in NEEDS_DATA and "--data-dir" not in argv:
        argv += ["--data-dir", cifar_dir]
    if script == "results":
        argv = ["--results-dir", RESULTS] + argv
    argv += SMOKE.get(script, [])
    if script == "bench":  # the yardstick's code, not its 2048x2048 cost (seconds where bfloat16 is emulated)
        monkeypatch.setattr(importlib.import_module("bench"), "PEAK_SIZE", 256)
    monkeypatch.chdir(tmp_path)
    assert importlib.import_module(script).main(argv) == 0
    capsys.readouterr()
    if script == "train":
        run = tmp_path / "runs" / words[2]
        assert (run / rundir.MODEL_FILE).is_file() and rundir.read_json(
            str(run / rundir.CONFIG_FILE), "config")["status"] == "complete"

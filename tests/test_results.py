"""results.py: records copied from real run folders, and the README's table built from them."""
import json
import os
import shutil

from pathlib import Path

import numpy as np
import pytest

import evaluate
import results
import rundir
from cifar_fixtures import make_images


@pytest.fixture(scope="module")
def evaluated_run(trained_alexnet, tmp_path_factory):
    """A copy of the session's alexnet run, evaluated (with TTA) as results.py requires."""
    run = shutil.copytree(trained_alexnet, str(tmp_path_factory.mktemp("results_runs") / "alexnet_short"))
    x_test, y_test = make_images(64, seed=4)
    evaluate.evaluate_run(run, x_test, y_test, batch_size=32, tta="flip")
    return run


def as_recipe(record, name, **changes):
    """Make a record's saved settings exactly recipe `name`'s for its network, as train.py would save them."""
    import dataclasses

    import recipes
    config = json.load(open(os.path.join(record, rundir.CONFIG_FILE)))
    saved = config["settings"]
    settings = dataclasses.replace(recipes.recipe_settings(name, config["model"]), seed=saved["seed"],
                                   precision=saved["precision"])
    settings = dataclasses.asdict(recipes.resolve_settings(config["model"], settings))
    config["settings"] = dict(settings, **changes)
    config["epochs_completed"] = min(config["epochs_completed"], config["settings"]["epochs"])
    rundir.write_json(os.path.join(record, rundir.CONFIG_FILE), config)
    return config


def test_collect_copies_the_three_records_and_table_reads_them(evaluated_run, tmp_path, capsys):
    out = tmp_path / "results"
    assert results.main(["--results-dir", str(out), "collect", evaluated_run]) == 0
    record = out / "alexnet_short"
    assert sorted(os.listdir(record)) == sorted(results.RECORD_FILES)  # no model, no temporaries
    history = json.load(open(os.path.join(evaluated_run, rundir.HISTORY_FILE)))
    assert json.load(open(record / rundir.HISTORY_FILE)) == history
    # The copies travel: the run folder and the data by name, no path of this machine.
    config, run_config = (json.load(open(folder / rundir.CONFIG_FILE)) for folder in (record, Path(evaluated_run)))
    assert os.path.isabs(run_config["data_source"]) and config["data_source"] == os.path.basename(
        run_config["data_source"])
    assert config["record"]["name"] == "alexnet_short" and config["record"]["run_folder"] == "alexnet_short"
    assert {key: value for key, value in config.items() if key not in ("data_source", "record")} == {
        key: value for key, value in run_config.items() if key != "data_source"}
    metrics = json.load(open(record / rundir.METRICS_FILE))
    assert metrics["run_dir"] == "alexnet_short"
    assert metrics["test_accuracy"] == json.load(open(os.path.join(evaluated_run, rundir.METRICS_FILE)))["test_accuracy"]
    for name in os.listdir(record):
        text = open(record / name).read()
        assert str(tmp_path) not in text and os.path.dirname(evaluated_run) not in text
    capsys.readouterr()

    # Change the record: the table must follow the files, not the run folder.
    metrics = json.load(open(record / rundir.METRICS_FILE))
    metrics.update(test_accuracy=0.8765, test_accuracy_tta=0.8899)
    rundir.write_json(str(record / rundir.METRICS_FILE), metrics)
    assert results.main(["--results-dir", str(out), "records"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| record | command |") and len(lines) == 3
    assert "`python train.py alexnet --recipe short" in lines[2] and "--limit 64" in lines[2]
    assert f"--seed {config['settings']['seed']}" in lines[2] and "87.65 %" in lines[2]
    # 3 epochs on 64 images is no recipe's run: the table says so and has no row for it.
    with pytest.raises(SystemExit):
        results.main(["--results-dir", str(out), "table"])
    assert "holds no record of a recipe's settings" in capsys.readouterr().err
    as_recipe(record, "short")
    assert results.main(["--results-dir", str(out), "table"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| network | command | epochs | seeds | test accuracy | with TTA |") and len(lines) == 5
    assert lines[2] == (f"| alexnet | `python train.py alexnet --recipe short` | {config['epochs_completed']} "
                        f"| {config['settings']['seed']} | 87.65 % | 88.99 % | 74 % | beaten by 13.6 points "
                        "| `alexnet_short` |")
    note = lines[4]
    assert "With TTA: `evaluate.py --tta flip`." in note and "The report: " not in note  # no paper row
    precision = results.PRECISION_WORDS[config["policy"]]
    assert f"alexnet `short` {config['train_seconds'] / 60:.1f} min ({precision})" in note


def test_table_gives_one_row_per_recipe_with_mean_and_std_over_its_seeds(evaluated_run, tmp_path, capsys):
    out = tmp_path / "results"
    results.collect(evaluated_run, str(out), name="a")
    accuracies = {"a": 0.90, "b": 0.92, "c": 0.91}
    for name in ("b", "c"):
        shutil.copytree(out / "a", out / name)
    for name, accuracy in accuracies.items():
        # c was saved under a recipe name since removed: its settings, not its name, make its row.
        as_recipe(out / name, "short", seed=ord(name), recipe="nesterov" if name == "c" else "short")  # 97-99
        metrics = json.load(open(out / name / rundir.METRICS_FILE))
        metrics.update(test_accuracy=accuracy, test_accuracy_tta=accuracy + 0.01, tta_mode="flip-translate")
        rundir.write_json(str(out / name / rundir.METRICS_FILE), metrics)
    assert results.main(["--results-dir", str(out), "table"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5  # one row, then the note
    # mean 91.00, sample standard deviation of (90, 92, 91) = 1.00
    assert "| 97, 98, 99 | 91.00 ± 1.00 % | 92.00 ± 1.00 % |" in lines[2] and "`a`, `b`, `c`" in lines[2]

    # The same command on another CPU, or in another precision, goes in the note, not in a row of
    # its own; a record of no recipe's settings is named there too.
    policy, = {json.load(open(out / name / rundir.CONFIG_FILE))["policy"] for name in accuracies}
    other = "float32" if policy != "float32" else "mixed_bfloat16"  # the recipe's auto resolved by this CPU
    # A device other than this machine's, whichever it is.
    device, words = next((device, words) for device, words in (
        ("CPU (AMD EPYC, 2 cores, AVX2)", "an AMD EPYC with AVX2"), ("CPU (Intel Xeon, 2 cores, AMX)",
                                                                     "an Intel Xeon with AMX"))
        if device != json.load(open(out / "a" / rundir.CONFIG_FILE))["device"])
    for name, change in (("d", {"device": device}), ("e", {"policy": other})):
        shutil.copytree(out / "a", out / name)
        config = json.load(open(out / name / rundir.CONFIG_FILE))
        rundir.write_json(str(out / name / rundir.CONFIG_FILE), dict(config, **change))
    shutil.copytree(out / "a", out / "f")
    as_recipe(out / "f", "short", epochs=2)
    assert results.main(["--results-dir", str(out), "table"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and "| 97, 98, 99 |" in lines[2]
    note = lines[4]
    assert (f"`python train.py alexnet --recipe short` on {words} ({results.PRECISION_WORDS[policy]}), "
            "seed 97: 90.00 %, 91.00 % with TTA") in note and "(`d`)" in note
    assert f"({results.PRECISION_WORDS[other]}), seed 97: 90.00 %" in note and "(`e`)" in note
    assert note.endswith("Not in the table, as no recipe trains their settings (`results.py records` lists "
                         "them): `f`.")


def test_the_report_s_protocol_row_sets_its_early_stop_beside_the_report(trained_vgg16, run_copy, tmp_path,
                                                                        capsys):
    run = run_copy(trained_vgg16)
    x_test, y_test = make_images(64, seed=4)
    evaluate.evaluate_run(run, x_test, y_test, batch_size=32)  # no TTA
    out = tmp_path / "results"
    record = results.collect(run, str(out), name="vgg16_paper")
    config = as_recipe(record, "paper")  # 300 epochs, as if EarlyStopping had ended it after 3
    metrics = json.load(open(os.path.join(record, rundir.METRICS_FILE)))
    rundir.write_json(os.path.join(record, rundir.METRICS_FILE), dict(metrics, test_accuracy=0.9212))
    assert results.main(["--results-dir", str(out), "table"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[2] == ("| vgg16 | `python train.py vgg16` | 3 (early stop) | 0 | 92.12 % | - | 90 % "
                        "| beaten by 2.1 points | `vgg16_paper` |")
    assert f"vgg16 `paper` {config['train_seconds'] / 60:.1f} min (float32)" in lines[4]
    assert "The report: 249 min (vgg16) on a MacBook Air M3." in lines[4] and "With TTA" not in lines[4]


def test_cpu_class_names_the_cpu_and_its_vector_extension():
    assert results.cpu_class("CPU (Intel(R) Xeon(R) Processor, 2 cores, AMX)") == ("Intel Xeon with AMX", "2 cores")
    assert results.cpu_class("CPU (AMD EPYC, 2 cores, AVX-512 BF16)") == ("AMD EPYC with AVX-512 BF16", "2 cores")
    assert results.cpu_class("CPU (AMD EPYC, 2 cores)") == ("AMD EPYC", "2 cores")
    assert results.cpu_class("GPU (NVIDIA A100)") == ("GPU (NVIDIA A100)", None)


def test_collect_with_model_keeps_an_inference_copy_that_scripts_use(evaluated_run, tmp_path, capsys, cifar_dir,
                                                                     monkeypatch):
    import keras
    out = tmp_path / "results"
    assert results.main(["--results-dir", str(out), "collect", "--with-model", evaluated_run]) == 0
    record = out / "alexnet_short"
    assert sorted(os.listdir(record)) == sorted(results.RECORD_FILES + (rundir.MODEL_FILE, rundir.STATS_FILE))
    original = keras.saving.load_model(os.path.join(evaluated_run, rundir.MODEL_FILE))
    copy = keras.saving.load_model(str(record / rundir.MODEL_FILE))
    assert original.optimizer is not None and getattr(copy, "optimizer", None) is None  # the optimizer's state is left out
    for kept, trained in zip(copy.get_weights(), original.get_weights()):
        np.testing.assert_array_equal(kept, trained)
    assert os.path.getsize(record / rundir.MODEL_FILE) < os.path.getsize(os.path.join(evaluated_run, rundir.MODEL_FILE))
    capsys.readouterr()

    # evaluate.py on the record prints its figures and writes them elsewhere, never into it.
    monkeypatch.chdir(tmp_path)
    before = open(record / rundir.METRICS_FILE).read()
    assert evaluate.main([str(record), "--data-dir", cifar_dir, "--limit", "40"]) == 0
    out_text = capsys.readouterr().out
    assert open(record / rundir.METRICS_FILE).read() == before
    elsewhere = tmp_path / evaluate.RECORD_METRICS_DIR / "alexnet_short" / rundir.METRICS_FILE
    assert "is a committed record" in out_text and f"wrote {os.path.relpath(elsewhere, tmp_path)}" in out_text
    assert json.load(open(elsewhere))["test_images"] == 40


@pytest.mark.parametrize("case, message", [
    ("running", "the run is not complete"),
    ("unevaluated", "no metrics.json; run evaluate.py on it first"),
    ("missing", "does not exist"),
])
def test_collect_refuses_unfinished_or_unevaluated_runs(evaluated_run, run_copy, tmp_path, capsys, case, message):
    run = str(tmp_path / "missing_run")
    if case != "missing":
        run = run_copy(evaluated_run)
    if case == "running":
        config = json.load(open(os.path.join(run, rundir.CONFIG_FILE)))
        rundir.write_json(os.path.join(run, rundir.CONFIG_FILE), dict(config, status="running"))
    if case == "unevaluated":
        os.remove(os.path.join(run, rundir.METRICS_FILE))
    with pytest.raises(SystemExit) as raised:
        results.main(["--results-dir", str(tmp_path / "results"), "collect", run])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "results") or os.listdir(tmp_path / "results") == []  # no record


def test_collect_unfinished_keeps_a_stopped_run_as_far_as_its_last_epoch(cifar_dir, tmp_path, monkeypatch, capsys):
    """The report's protocol stopped after epoch 2 of 4 as SIGTERM stops it (KeyboardInterrupt after a
    commit): a plain collect refuses it, --unfinished keeps it with the last commit's counts and says
    so in every table, and the run stays resumable and is collected whole once it ends."""
    import checkpoint
    import train
    commit = checkpoint.RunFolderCheckpoint.commit

    def commit_then_stop(self, epoch):
        commit(self, epoch)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.RunFolderCheckpoint, "commit", commit_then_stop)
    run, out = str(tmp_path / "vgg16_paper"), str(tmp_path / "results")
    # No val_loss beats a min_delta of 1e9: epoch 1 stays EarlyStopping's best, the rate is cut after epoch 2.
    assert train.main(["vgg16", "--data-dir", cifar_dir, "--run-dir", run, "--epochs", "4", "--limit", "64",
                       "--batch-size", "32", "--augmentation", "none", "--seed", "0", "--lr-patience", "0",
                       "--lr-min-delta", "1e9", "--stop-min-delta", "1e9"]) == 130
    monkeypatch.undo()
    state = json.load(open(os.path.join(run, checkpoint.CHECKPOINT_DIR, checkpoint.STATE_FILE)))
    assert state["epoch"] == 2 and json.load(open(os.path.join(run, rundir.CONFIG_FILE)))["status"] == "running"
    x_test, y_test = make_images(64, seed=4)
    evaluate.evaluate_run(run, x_test, y_test, batch_size=32, tta="flip")
    capsys.readouterr()

    def refused(argv, message):
        with pytest.raises(SystemExit) as raised:
            results.main(["--results-dir", out, "collect", *argv])
        err = capsys.readouterr().err
        assert raised.value.code == 2 and message in err and err.count("\n") == 1, err

    refused([run], "the run is not complete (status 'running'); finish it with train.py --resume first (or "
                   "keep it as it stands with --unfinished)")
    lock = rundir.RunLock(run).acquire()  # as a live train.py holds it
    refused(["--unfinished", run], "a train.py is still training it; stop it first")
    lock.release()
    metrics = os.path.join(run, rundir.METRICS_FILE)
    model_time = os.path.getmtime(os.path.join(run, rundir.MODEL_FILE))  # epoch 1's, the best
    os.utime(metrics, (model_time, model_time))  # as if evaluated before the run's last epoch, 2
    refused(["--unfinished", run], "metrics.json predates the run's last completed epoch; run evaluate.py")
    os.utime(metrics)
    assert not os.path.exists(out) or os.listdir(out) == []

    assert results.main(["--results-dir", out, "collect", "--unfinished", run]) == 0
    config, history, _ = results.read_record(os.path.join(out, "vgg16_paper"))
    assert config["status"] == "unfinished" and config["epochs_completed"] == 2 and config["best_epoch"] == 1
    assert config["train_seconds"] == state["train_seconds"] and history == state["history"]
    assert config["callbacks"]["early_stopping"]["wait"] == 1 and config["model_epoch"] == "best by val_loss"
    capsys.readouterr()
    for command, shown in (("paper", "| 2 (1), unfinished: stopped before its end (up to 4 epochs) |"),
                           ("records", "| 2 (unfinished) |")):
        assert results.main(["--results-dir", out, command]) == 0
        row = capsys.readouterr().out.strip().splitlines()[2]
        assert shown in row, row
        assert command != "paper" or "after a partial run" in row

    # The run itself is untouched: it resumes to its end and is then collected whole.
    assert os.path.isfile(os.path.join(run, checkpoint.CHECKPOINT_DIR, checkpoint.STATE_FILE))
    assert train.main(["vgg16", "--resume", "--run-dir", run]) == 0
    os.utime(metrics, (0, 0))  # evaluated before model.keras was last written
    refused(["--overwrite", run], "its metrics.json predates its model.keras; run evaluate.py on it again")
    os.utime(metrics)
    assert results.main(["--results-dir", out, "collect", "--overwrite", run]) == 0
    config, history, _ = results.read_record(os.path.join(out, "vgg16_paper"))
    assert config["status"] == "complete" and len(history["epoch"]) == config["epochs_completed"] == 4


def test_table_of_an_empty_folder_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        results.main(["--results-dir", str(tmp_path), "table"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "holds no run records" in err and err.count("\n") == 1 and "Traceback" not in err


def test_paper_table_sets_each_protocol_record_beside_the_report(trained_vgg16, evaluated_run, run_copy, tmp_path,
                                                                 capsys):
    vgg16 = run_copy(trained_vgg16)  # the report's protocol, --epochs 3
    x_test, y_test = make_images(64, seed=4)
    evaluate.evaluate_run(vgg16, x_test, y_test, batch_size=32, tta="flip")
    out = tmp_path / "results"
    results.collect(vgg16, str(out), name="vgg16_paper")
    results.collect(evaluated_run, str(out), name="alexnet_short")  # --recipe short: not in the report's table
    shutil.copytree(out / "vgg16_paper", out / "vgg16_paper_full")
    config = json.load(open(out / "vgg16_paper_full" / rundir.CONFIG_FILE))
    config["settings"]["epochs"] = 300  # as if EarlyStopping had ended a full run after these epochs
    rundir.write_json(str(out / "vgg16_paper_full" / rundir.CONFIG_FILE), config)
    for name, rates in (("vgg16_paper", [5e-4] * 3), ("vgg16_paper_full", [5e-4, 2.5e-4, 2.5e-4])):
        history = json.load(open(out / name / rundir.HISTORY_FILE))  # no cut; a cut after epoch 1
        rundir.write_json(str(out / name / rundir.HISTORY_FILE), dict(history, learning_rate=rates))
    for name, accuracy in (("vgg16_paper", 0.8950), ("vgg16_paper_full", 0.9212)):
        metrics = json.load(open(out / name / rundir.METRICS_FILE))
        rundir.write_json(str(out / name / rundir.METRICS_FILE), dict(metrics, test_accuracy=accuracy))
    assert results.main(["--results-dir", str(out), "paper"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[2:]
    assert len(rows) == 2 and not any("alexnet_short" in row for row in rows)
    partial, full = rows
    assert "`vgg16_paper`" in partial and "partial: --epochs 3" in partial
    assert "89.50 %" in partial and "reproduced (-0.5 points) after a partial run" in partial  # the report: 90 %
    assert "partial" not in full and "beaten by 2.1 points" in full
    assert "| 2: 0.00025 |" in full and "| none |" in partial  # the learning-rate cuts
    assert "249 min, val. 90 % (augmented), test 90 %, 4 s (MacBook Air M3)" in full
    metrics = json.load(open(out / "vgg16_paper_full" / rundir.METRICS_FILE))
    rundir.write_json(str(out / "vgg16_paper_full" / rundir.METRICS_FILE), dict(metrics, test_accuracy=0.7240))
    assert results.main(["--results-dir", str(out), "paper"]) == 0
    assert "short by 17.6 points" in capsys.readouterr().out.splitlines()[3]
    # A protocol run with no hold-out (--schedule cosine --validation-split 0) has no validation figure.
    history = json.load(open(out / "vgg16_paper" / rundir.HISTORY_FILE))
    rundir.write_json(str(out / "vgg16_paper" / rundir.HISTORY_FILE),
                      dict(history, val_loss=[None] * 3, val_accuracy=[None] * 3))
    assert results.main(["--results-dir", str(out), "paper"]) == 0
    assert " min | none (--validation-split 0) | none |" in capsys.readouterr().out.splitlines()[2]


def test_collect_never_mixes_replaces_or_half_writes_a_record(evaluated_run, run_copy, tmp_path, capsys):
    out = tmp_path / "results"

    def refused(argv, message):
        with pytest.raises(SystemExit) as raised:
            results.main(["--results-dir", str(out), "collect", *argv])
        err = capsys.readouterr().err
        assert raised.value.code == 2 and message in err and err.count("\n") == 1, err

    assert results.main(["--results-dir", str(out), "collect", "--with-model", evaluated_run]) == 0
    record = out / "alexnet_short"
    refused([evaluated_run], f"{record} already holds a record; --overwrite replaces it")
    assert rundir.MODEL_FILE in os.listdir(record)
    # --overwrite without --with-model: the old model goes with the old record, no mix is left.
    assert results.main(["--results-dir", str(out), "collect", "--overwrite", evaluated_run]) == 0
    assert sorted(os.listdir(record)) == sorted(results.RECORD_FILES)
    assert json.load(open(record / rundir.CONFIG_FILE))["record"]["with_model"] is False

    damaged = run_copy(evaluated_run, "damaged")
    model = open(os.path.join(damaged, rundir.MODEL_FILE), "rb").read()
    with open(os.path.join(damaged, rundir.MODEL_FILE), "wb") as handle:
        handle.write(model[:len(model) // 2])  # a copy cut short
    os.utime(os.path.join(damaged, rundir.METRICS_FILE))  # not older than the model it would describe
    refused(["--with-model", damaged], "model.keras: damaged or truncated .keras file (the run's model)")
    assert sorted(os.listdir(out)) == ["alexnet_short"]  # no half record, no staging folder left

    limited = run_copy(evaluated_run, "limited")
    metrics = json.load(open(os.path.join(limited, rundir.METRICS_FILE)))
    rundir.write_json(os.path.join(limited, rundir.METRICS_FILE), dict(metrics, test_limit=100))
    refused([limited], "of the first 100 test images (evaluate.py --limit)")

    with pytest.raises(SystemExit):
        results.main(["--results-dir", os.path.dirname(evaluated_run), "collect", evaluated_run])
    assert "that is the run folder itself" in capsys.readouterr().err


def test_a_record_without_its_model_is_told_as_such(evaluated_run, tmp_path, capsys):
    import predict_image
    record = results.collect(evaluated_run, str(tmp_path / "results"))
    for main, argv in ((evaluate.main, [record]), (predict_image.main, [record, "photo.jpg"])):
        with pytest.raises(SystemExit) as raised:
            main(argv)
        err = capsys.readouterr().err
        assert raised.value.code == 2 and "a record collected without its model" in err and err.count("\n") == 1


def test_the_command_of_a_record_is_one_a_user_can_type():
    import recipes
    short = {key: value for key, value in recipes.RECIPES["short"]["alexnet"].items()}
    # Saved under a recipe name since removed, with today's short settings: today's command.
    config = {"model": "alexnet", "settings": {**short, "recipe": "nesterov", "precision": "mixed", "seed": 0}}
    assert results.recipe_of(config) == "short"
    assert results.command_of(config) == "python train.py alexnet --recipe short --seed 0"
    config["settings"].update(epochs=10, limit=640)
    assert results.recipe_of(config) is None
    assert results.command_of(config) == "python train.py alexnet --recipe short --seed 0 --epochs 10 --limit 640"
    # The report's protocol, from a record that predates settings added since (at their defaults).
    paper = {"model": "vgg16", "settings": {"recipe": "paper", "seed": 1, "augment_validation": True}}
    assert results.command_of(paper) == "python train.py vgg16 --seed 1 --augment-validation"
    transfer = {"model": "vgg16_pretrained", "settings": {"recipe": "transfer", "cache_features": False,
                                                          **{key: value for key, value in
                                                             recipes.RECIPES["transfer"]["vgg16_pretrained"].items()
                                                             if key != "cache_features"}}}
    assert results.command_of(transfer) == "python train.py vgg16_pretrained --recipe transfer --no-cache-features"

"""train.py end to end on synthetic CIFAR-10: run folders, resume after SIGKILL, bad input, two CPU devices."""
import dataclasses
import json
import os
import pickle
import shutil
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import checkpoint
import data
import models
import recipes
import rundir
import train
from checkpoint import CHECKPOINT_DIR, STATE_FILE, eta_line
from cifar_fixtures import copied_when_killed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small enough for seconds an epoch on two shared CPU cores.
SMALL = ["--limit", "64", "--batch-size", "32", "--seed", "1"]


def read(run_dir, name):
    with open(os.path.join(run_dir, name)) as handle:
        return json.load(handle)


def check_run_folder(run_dir, model_name, epochs, best_is_lowest=True):
    """Everything the run-folder contract promises, for a complete run of `epochs` epochs."""
    config = read(run_dir, rundir.CONFIG_FILE)
    history = read(run_dir, rundir.HISTORY_FILE)
    assert config["model"] == model_name and config["status"] == "complete"
    for key in ("settings", "data_source", "device", "versions", "parameters", "split", "started",
                "finished", "train_seconds", "epochs_completed", "best_epoch"):
        assert key in config, key
    assert config["epochs_completed"] == epochs and config["train_seconds"] > 0
    assert set(history) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                            "epoch_seconds", "phase"}
    assert history["epoch"] == list(range(1, epochs + 1))
    assert all(len(values) == epochs for values in history.values())
    if best_is_lowest:  # with the default min_delta of 0, the best epoch is the lowest val_loss
        assert config["best_epoch"] - 1 == int(np.argmin(history["val_loss"]))
    stats = data.load_stats(os.path.join(run_dir, rundir.STATS_FILE))
    assert stats["pixels"] == config["split"]["train"] * 32 * 32 * 3
    assert not os.path.exists(os.path.join(run_dir, CHECKPOINT_DIR))  # removed once complete
    assert not [name for name in os.listdir(run_dir) if name.startswith(".") and name != rundir.LOCK_FILE]  # no temporaries
    model = keras.saving.load_model(os.path.join(run_dir, rundir.MODEL_FILE))
    images = data.standardize(np.zeros((2, 32, 32, 3), np.uint8), stats)
    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-4)
    return config, history


@pytest.fixture(scope="module")
def vgg16_run(cifar_dir, tmp_path_factory):
    """One short vgg16 run with the paper's ImageDataGenerator, shared by the tests that read it."""
    run_dir = str(tmp_path_factory.mktemp("runs") / "vgg16")
    assert train.main(["vgg16", "--data-dir", cifar_dir, "--run-dir", run_dir, "--epochs", "2", *SMALL]) == 0
    return run_dir


def test_vgg16_leaves_a_complete_run_folder(vgg16_run, capsys):
    config, _ = check_run_folder(vgg16_run, "vgg16", epochs=2)
    assert config["parameters"] == 1_186_346
    assert config["split"] == {"train": 64, "valid": 32}  # --limit: 64 and max(64 // 10, batch 32)
    settings = config["settings"]
    assert (settings["learning_rate"], settings["lr_factor"], settings["lr_patience"], settings["min_lr"],
            settings["stop_patience"]) == (5e-4, 0.5, 10, 1e-5, 40)  # the paper's protocol by default
    assert settings["augmentation"] == "idg" and settings["augment_validation"] is False


@pytest.mark.parametrize("model_name, options", [
    ("alexnet", ["--augmentation", "fast", "--augment-validation", "--epochs", "1"]),
    ("alexnet", ["--recipe", "short", "--epochs", "1", "--cutout", "8"]),  # crop, cutout, precision auto
    ("alexnet", ["--recipe", "short", "--epochs", "2", "--policy", "randaugment", "--erasing", "0.5",
                 "--mixing", "cutmix", "--refine-epochs", "1"]),  # Keras' layers, then the refine stage
    ("vgg16_pretrained", ["--weights", "none", "--augmentation", "none", "--epochs", "1",
                          "--limit", "2", "--batch-size", "2"]),  # 224x224 VGG16: a few images
])
def test_other_models_leave_complete_run_folders(model_name, options, cifar_dir, tmp_path, capsys, monkeypatch):
    import augment
    pipelines, make_dataset = [], augment.make_dataset
    def spy(*args, **kwargs):
        pipelines.append((kwargs["augment"], kwargs.get("crop_padding", augment.CROP_PADDING)))
        return make_dataset(*args, **kwargs)
    monkeypatch.setattr(augment, "make_dataset", spy)
    run_dir = str(tmp_path / model_name)
    assert train.main([model_name, "--data-dir", cifar_dir, "--run-dir", run_dir, *SMALL, *options]) == 0
    epochs = int(options[options.index("--epochs") + 1])
    config, _ = check_run_folder(run_dir, model_name, epochs=epochs)
    padding = 2 if "--recipe" in options else 4  # alexnet's short crops by 2 pixels
    assert config["settings"]["crop_padding"] == padding
    if config["settings"]["augmentation"] in ("crop", "fast"):  # the training pipeline, then validation's
        transform = {"crop": "crop", "fast": "paper"}[config["settings"]["augmentation"]]
        assert pipelines == [(transform, padding),
                             (transform, padding) if config["settings"]["augment_validation"] else (None, 4)]
    assert config["settings"]["precision"] in ("float32", "mixed")  # "auto" is resolved before it is saved
    assert config["policy"] == {"float32": "float32", "mixed": "mixed_bfloat16"}[config["settings"]["precision"]]
    out = capsys.readouterr().out
    assert f"train.py: {model_name}, " in out and "device" in out and f"{model_name} done: {epochs} epoch" in out
    assert ("train.py: epochs 2 onward: crop and flip only (refine stage)" in out) == ("--refine-epochs" in options)


def expect_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as raised:
        train.main(argv)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and err.count("\n") == 1, err


def test_an_existing_run_is_neither_overwritten_nor_resumed_when_complete(vgg16_run, cifar_dir, capsys):
    before = {name: open(os.path.join(vgg16_run, name), "rb").read() for name in os.listdir(vgg16_run)}
    expect_exit_2(capsys, ["vgg16", "--data-dir", cifar_dir, "--run-dir", vgg16_run, *SMALL],
                  "already holds a run; --resume continues it, --overwrite replaces it")
    expect_exit_2(capsys, ["vgg16", "--resume", "--run-dir", vgg16_run], "is already complete")
    expect_exit_2(capsys, ["alexnet", "--resume", "--run-dir", vgg16_run], "already complete")
    after = {name: open(os.path.join(vgg16_run, name), "rb").read() for name in os.listdir(vgg16_run)}
    assert after == before


def write_hostile_batch(folder):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch HACKED",))
    os.makedirs(folder)
    with open(os.path.join(folder, "data_batch_1"), "wb") as handle:
        pickle.dump({b"data": Exploit(), b"labels": []}, handle)
    return folder


@pytest.mark.parametrize("argv, message", [
    (["vgg61"], "unknown model 'vgg61'; choose one of vgg16, alexnet, vgg16_pretrained"),
    (["vgg16", "--epochs", "0"], "epochs must be an integer >= 1, received 0"),
    (["vgg16", "--batch-size", "-4"], "batch size must be an integer >= 1, received -4"),
    (["vgg16", "--learning-rate", "0"], "learning rate must be > 0, received 0.0"),
    (["vgg16", "--learning-rate=-1e-3"], "learning rate must be > 0, received -0.001"),
    (["vgg16", "--epochs", "many"], "argument --epochs: invalid int value: 'many'"),
    (["vgg16", "--limit", "0"], "--limit must be a positive number of images"),
    (["vgg16", "--augmentation", "none", "--augment-validation"], "--augment-validation needs an augmentation"),
    (["vgg16", "--weights", "none"], "--weights applies to vgg16_pretrained only"),
    (["vgg16", "--data-dir", "{tmp}/nowhere"], "nowhere' does not exist"),
    (["vgg16", "--data-dir", "{tmp}"], "holds no CIFAR-10"),
    (["vgg16", "--data-dir", "{hostile}"], "refused without running it"),
    (["vgg16", "--data-dir", "{truncated}"], "is not a whole number of"),
    (["vgg16", "--resume"], "no run to resume"),
    (["vgg16", "--run-dir", "{tmp}/a_file/run"], "cannot be written"),
    # The weights are looked for before any data is read: the data folder here does not exist.
    (["vgg16_pretrained", "--weights", "{tmp}/missing.h5", "--data-dir", "{tmp}/nowhere"],
     "missing.h5' does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, cifar_dir, capsys):
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for name in os.listdir(cifar_dir):
        with open(os.path.join(cifar_dir, name), "rb") as handle:
            (truncated / name).write_bytes(handle.read(5000) if name == "data_batch_1.bin" else b"")
    (tmp_path / "a_file").write_text("not a folder")
    places = {"tmp": str(tmp_path), "hostile": write_hostile_batch(str(tmp_path / "hostile")),
              "truncated": str(truncated)}
    argv = [arg.format(**places) for arg in argv]
    if "--run-dir" not in argv:
        argv += ["--run-dir", str(tmp_path / "run")]
    expect_exit_2(capsys, argv, message)
    assert not os.path.exists(tmp_path / "run")  # a refused start leaves no run folder behind
    assert not os.path.exists("HACKED")


def test_a_killed_mirrored_run_resumes_with_its_callbacks_state(cifar_dir, tmp_path, capsys):
    """Train on two logical CPUs (mirrored), SIGKILL after epoch 1, --resume on one device.

    A huge min_delta makes every epoch after the first "no improvement", so the schedule is
    known in advance: ReduceLROnPlateau (patience 1) halves the rate after epochs 2 and 3,
    and EarlyStopping (patience 3) stops after epoch 4 with epoch 1 the best. If the resumed
    run lost the callbacks' counters, its first epoch would count as an improvement (best
    forgotten) and both schedules would shift; if it lost the optimizer, the halved rate would
    be back at 5e-4. (One subprocess serves both the mirrored and the kill test: each costs
    a TensorFlow start-up, and the test budget is tight.)
    """
    run_dir = str(tmp_path / "run")
    argv = ["alexnet", "--cpu-devices", "2", "--distribute", "mirrored", "--data-dir", cifar_dir,
            "--run-dir", run_dir, "--epochs", "6", *SMALL, "--lr-patience", "1", "--lr-min-delta", "1e9",
            "--stop-patience", "3", "--stop-min-delta", "1e9"]
    # train.py, held after epoch 1's commit until the kill (its stdin never ends while this test
    # lives), so the kill lands after epoch 1 however fast the machine: no race with epochs 2-4.
    script = ("import sys, checkpoint, train\n"
              "commit = checkpoint.RunFolderCheckpoint.commit\n"
              "def commit_then_hold(self, epoch):\n"
              "    commit(self, epoch)\n"
              "    if epoch == 0:\n"
              "        sys.stdin.read()\n"
              "checkpoint.RunFolderCheckpoint.commit = commit_then_hold\n"
              "sys.exit(train.main(sys.argv[1:]))\n")
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-c", script, *argv], cwd=ROOT, stdin=subprocess.PIPE,
                                   stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        checkpoint = os.path.join(run_dir, CHECKPOINT_DIR)
        deadline = time.monotonic() + 240
        while not (os.path.exists(os.path.join(checkpoint, STATE_FILE))
                   and read(checkpoint, STATE_FILE)["epoch"] >= 1):
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.02)
        process.kill()  # SIGKILL: no handler, no clean-up runs
        process.wait()
        process.stdin.close()
    assert "strategy mirrored (2 replica(s))" in log_path.read_text()
    config = read(run_dir, rundir.CONFIG_FILE)
    assert config["status"] == "running" and config["strategy"] == {"name": "mirrored", "replicas": 2}
    done = read(checkpoint, STATE_FILE)["epoch"]
    assert done == 1

    capsys.readouterr()
    assert train.main(["alexnet", "--resume", "--run-dir", run_dir, "--distribute", "none"]) == 0
    out = capsys.readouterr().out
    assert f"resuming after epoch {done}" in out
    assert f"Epoch {done + 1}/6" in out and f"Epoch {done}/6" not in out  # no completed epoch again

    config, history = check_run_folder(run_dir, "alexnet", epochs=4, best_is_lowest=False)
    assert history["learning_rate"] == pytest.approx([5e-4, 5e-4, 2.5e-4, 1.25e-4])
    assert config["best_epoch"] == 1
    assert config["callbacks"]["early_stopping"]["wait"] == 3
    assert config["resumed"][0]["after_epoch"] == done
    assert config["settings"]["seed"] == 1 and config["settings"]["limit"] == 64  # the saved settings
    assert config["strategy"] == {"name": "none", "replicas": 1}


# --- Recipes ------------------------------------------------------------------------

def test_a_recipe_sets_the_defaults_and_flags_override_them(monkeypatch):
    seen = []
    monkeypatch.setattr(train, "train", lambda model, settings, *args, **kwargs: seen.append(settings))
    assert train.main(["vgg16", "--recipe", "short", "--epochs", "3", "--learning-rate", "0.05"]) == 0
    assert train.main(["vgg16", "--epochs", "3"]) == 0
    assert train.main(["alexnet", "--recipe", "short"]) == 0
    short, paper, alexnet = seen
    assert short == dataclasses.replace(recipes.recipe_settings("short", "vgg16"), epochs=3, learning_rate=0.05)
    assert (short.schedule, short.batch_size, short.augmentation) == ("cosine", 128, "crop")  # the recipe's
    assert (alexnet.weight_decay, alexnet.cutout, alexnet.crop_padding) == (5e-4, 0, 2)  # alexnet's own short
    assert paper == dataclasses.replace(recipes.Settings(), epochs=3)  # no --recipe: the paper's protocol
    assert (paper.schedule, paper.batch_size, paper.learning_rate) == ("plateau", 64, 5e-4)


def test_the_linear_schedule_takes_the_continuous_schedules_flags(monkeypatch):
    seen = []
    monkeypatch.setattr(train, "train", lambda model, settings, *args, **kwargs: seen.append(settings))
    assert train.main(["vgg16", "--recipe", "short", "--schedule", "linear", "--warmup-fraction", "0.2",
                       "--ema-momentum", "0.99", "--ema-every", "3"]) == 0
    [settings] = seen
    assert (settings.schedule, settings.warmup_fraction, settings.ema_momentum, settings.ema_every) == (
        "linear", 0.2, 0.99, 3)
    recipes.check_settings("vgg16", settings)  # accepted: EMA needs a continuous schedule, and this is one


def test_help_lists_every_recipe_with_its_purpose_and_networks(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name in recipes.RECIPES:
        line = next(line for line in lines if line.startswith(f"  {name} "))
        assert recipes.RECIPE_PURPOSES[name] in line and ", ".join(recipes.RECIPES[name]) in line
    assert "--recipe {paper,ten,short,long,transfer}" in out
    for title in train.OPTION_GROUPS:
        assert f"\n{title}:\n" in out


def test_every_setting_is_in_one_help_group():
    grouped = [name for names in train.OPTION_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(field.name for field in dataclasses.fields(recipes.Settings))


@pytest.mark.parametrize("argv, message", [
    (["vgg16", "--recipe", "fast"], "recipe 'fast' was removed; use --recipe short"),
    (["alexnet", "--recipe", "nesterov"], "recipe 'nesterov' was removed; use --recipe short"),
    (["vgg16", "--recipe", "regularized"], "recipe 'regularized' was removed; use --recipe short"),
    (["alexnet", "--recipe", "long"], "recipe 'long' does not serve alexnet; recipes for alexnet: paper, short"),
    (["vgg16", "--recipe", "transfer"], "recipe 'transfer' does not serve vgg16"),
    (["vgg16_pretrained", "--recipe", "short"], "recipe 'short' does not serve vgg16_pretrained"),
])
def test_a_removed_or_unserved_recipe_is_one_line_naming_what_to_use(argv, message, tmp_path, cifar_dir, capsys):
    expect_exit_2(capsys, argv + ["--data-dir", cifar_dir, "--run-dir", str(tmp_path / "run")], message)
    assert not os.path.exists(tmp_path / "run")


def test_a_run_of_a_removed_recipe_still_resumes_from_its_saved_settings(cifar_dir, tmp_path, monkeypatch):
    """A run folder whose config.json names a removed recipe continues with its saved settings."""
    run_dir = str(tmp_path / "old")
    settings = dataclasses.replace(recipes.recipe_settings("short", "alexnet"), recipe="nesterov", epochs=2,
                                   limit=64, batch_size=32, seed=0, precision="float32")
    commit = checkpoint.RunFolderCheckpoint.commit

    def commit_then_stop(self, epoch):
        commit(self, epoch)
        raise KeyboardInterrupt
    monkeypatch.setattr(checkpoint.RunFolderCheckpoint, "commit", commit_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train.train("alexnet", settings, run_dir, data_dir=cifar_dir, log=lambda line: None)
    monkeypatch.setattr(checkpoint.RunFolderCheckpoint, "commit", commit)
    assert train.main(["alexnet", "--resume", "--run-dir", run_dir]) == 0
    config = read(run_dir, rundir.CONFIG_FILE)
    assert config["status"] == "complete" and config["settings"]["recipe"] == "nesterov"
    assert config["epochs_completed"] == 2


@pytest.mark.parametrize("argv, message", [
    (["vgg16", "--recipe", "slow"], "unknown recipe 'slow'; choose one of paper, ten, short, long, transfer"),
    (["vgg16", "--cutout", "8"], "--cutout is not used with --augmentation idg (recipe paper); it applies to "
     "--augmentation crop or fast"),
    (["vgg16", "--recipe", "short", "--cutout", "33"], "cutout must be a square's side in pixels, 0 to 32"),
    (["vgg16", "--crop-padding", "2"], "--crop-padding is not used with --augmentation idg (recipe paper); it "
     "applies to --augmentation crop"),
    (["vgg16", "--recipe", "short", "--augmentation", "fast", "--crop-padding", "2"],
     "--crop-padding is not used with --augmentation fast (recipe short)"),
    (["vgg16", "--recipe", "short", "--crop-padding", "17"], "crop padding must be a shift in pixels, 0 to 16"),
    (["vgg16", "--precision", "double"], "argument --precision: invalid choice: 'double'"),
    (["vgg16", "--classifier-lr-scale", "0"], "classifier lr scale must be > 0, received 0.0"),
    (["vgg16", "--recipe", "short", "--lr-patience", "3"],
     "--lr-patience is not used with --schedule cosine (recipe short); it applies to --schedule plateau"),
    (["vgg16", "--warmup-fraction", "0.1"], "--warmup-fraction is not used with --schedule plateau"),
    (["vgg16", "--recipe", "short", "--schedule", "linear", "--lr-patience", "3"],
     "--lr-patience is not used with --schedule linear (recipe short); it applies to --schedule plateau"),
    (["vgg16", "--recipe", "short", "--schedule", "linear", "--min-lr", "0.5"],
     "min lr 0.5 is above the learning rate 0.1; the linear schedule decays"),
    (["vgg16", "--momentum", "0.8"], "--momentum is not used with --optimizer adam (recipe paper)"),
    (["vgg16", "--recipe", "short", "--label-smoothing", "1"], "label smoothing must lie in [0, 1)"),
    (["vgg16", "--recipe", "short", "--dropout-scale", "2"], "makes a dropout rate of 1"),
    (["vgg16", "--recipe", "short", "--min-lr", "0.5"], "min lr 0.5 is above the learning rate 0.1"),
    (["vgg16", "--recipe", "short", "--optimizer", "adam", "--momentum", "0.8"],
     "--momentum is not used with --optimizer adam (recipe short)"),
    (["vgg16", "--init", "orthogonal"], "argument --init: invalid choice: 'orthogonal'"),
    (["vgg16", "--refine-epochs", "5"], "--refine-epochs is not used with --augmentation idg (recipe paper)"),
    (["vgg16", "--recipe", "long", "--refine-epochs", "80"], "refine epochs must be an integer from 0 to "
     "epochs - 1 (79), received 80"),
    (["vgg16", "--recipe", "short", "--augmentation", "fast", "--schedule", "plateau", "--refine-epochs", "5"],
     "--refine-epochs needs vgg16 or alexnet with --schedule cosine or linear, not vgg16 with plateau"),
    (["alexnet", "--recipe", "short", "--refine-epochs", "5"], "--refine-epochs turns Cutout, --policy, --erasing "
     "and --mixing off for the last epochs, and this run uses none of them"),
    (["vgg16", "--validation-split", "0"], "--validation-split 0 leaves no validation images for --schedule "
     "plateau, which watches val_loss; use --schedule cosine or linear"),
    (["vgg16", "--recipe", "short", "--validation-split", "0.9"], "validation split must lie in [0, 0.5] (the "
     "share of the 50,000 training images held out), received 0.9"),
    (["vgg16", "--recipe", "short", "--augmentation", "fast", "--augment-validation", "--validation-split", "0"],
     "--validation-split 0 leaves no validation images to augment (--augment-validation)"),
    (["vgg16_pretrained", "--weights", "none", "--init", "whiten"],
     "--init whiten applies to the models trained from scratch (vgg16, alexnet), not vgg16_pretrained"),
])
def test_bad_recipe_input_is_one_line_and_exit_2(argv, message, tmp_path, cifar_dir, capsys):
    expect_exit_2(capsys, argv + ["--data-dir", cifar_dir, "--run-dir", str(tmp_path / "run")], message)
    assert not os.path.exists(tmp_path / "run")


def test_precision_auto_is_mixed_only_on_a_cpu_with_native_bfloat16(monkeypatch):
    settings = recipes.recipe_settings("short", "vgg16")
    assert settings.precision == "auto"
    for native, expected in ((True, "mixed"), (False, "float32"), (None, "float32")):  # None: unknown (macOS)
        monkeypatch.setattr(rundir, "cpu_description", lambda: ("a CPU", native))
        assert recipes.resolve_settings("vgg16", settings).precision == expected
    assert recipes.resolve_settings("vgg16", recipes.Settings()).precision == "float32"  # the paper's: never changed


def test_a_cpu_is_named_with_its_vector_extension(monkeypatch):
    # Two "AMD EPYC" machines here trained 4-5x apart in speed: the record must tell them apart.
    assert rundir.cpu_vector_extension() in ("AMX", "AVX-512 BF16", "AVX-512", "AVX2", None)
    monkeypatch.setattr(rundir, "cpu_vector_extension", lambda: "AVX2")
    monkeypatch.setattr(rundir, "cpu_description", lambda: ("AMD EPYC", False))
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])  # a CPU-only machine
    assert rundir.device_description() == f"CPU (AMD EPYC, {os.cpu_count()} cores, AVX2)"


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_a_continuous_schedule_warms_up_then_decays_to_min_lr(schedule):
    assert schedule in recipes.CONTINUOUS_SCHEDULES  # what lets --warmup-fraction and --ema-momentum apply
    settings = dataclasses.replace(recipes.recipe_settings("short", "vgg16"), epochs=4, warmup_fraction=0.25,
                                   learning_rate=0.1, min_lr=0.001, schedule=schedule)
    schedule_of = recipes.make_optimizer(settings, steps_per_epoch=10)._learning_rate
    rates = [float(schedule_of(step)) for step in range(43)]
    assert rates[0] == 0 and rates[5] == pytest.approx(0.05) and rates[10] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(rates[10:40], rates[11:41]))  # decays every step after warm-up
    assert rates[40] == pytest.approx(0.001, rel=1e-5) and rates[42] == pytest.approx(0.001, rel=1e-5)
    assert rates[25] == pytest.approx((0.1 + 0.001) / 2, rel=1e-5)  # both halfway down at the decay's middle
    # A sixth of the decay from either end: a straight line is a sixth of the way down (up); a
    # cosine lingers near the peak first and near min_lr last.
    early, late = 0.1 - (0.1 - 0.001) / 6, 0.001 + (0.1 - 0.001) / 6
    if schedule == "linear":
        assert rates[15] == pytest.approx(early, rel=1e-5) and rates[35] == pytest.approx(late, rel=1e-5)
    else:
        assert rates[15] > early + 0.005 and rates[35] < late - 0.005


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_with_swa_epochs_the_schedule_reaches_min_lr_that_many_epochs_early_and_holds_it(schedule):
    settings = dataclasses.replace(recipes.recipe_settings("short", "vgg16"), epochs=6, warmup_fraction=0.0,
                                   learning_rate=0.1, min_lr=0.01, schedule=schedule, swa_epochs=2)
    schedule_of = recipes.make_optimizer(settings, steps_per_epoch=10)._learning_rate
    rates = [float(schedule_of(step)) for step in range(61)]
    assert rates[0] == pytest.approx(0.1) and rates[20] == pytest.approx((0.1 + 0.01) / 2, rel=1e-5)
    assert all(a > b for a, b in zip(rates[:40], rates[1:41]))  # the decay ends after epoch 4 of 6
    assert rates[40:] == pytest.approx([0.01] * 21, rel=1e-5)


def test_a_model_compiled_with_the_linear_schedule_saves_and_loads(tmp_path):
    settings = dataclasses.replace(recipes.recipe_settings("short", "alexnet"), schedule="linear", epochs=3)
    model = models.build_model("alexnet")
    recipes.compile_model(model, settings, steps_per_epoch=7)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rundir.save_model(model, str(run_dir / rundir.MODEL_FILE))
    schedule = models.load_model(str(run_dir)).optimizer._learning_rate
    assert isinstance(schedule, models.OneCycle)
    assert (schedule.peak, schedule.warmup_steps, schedule.total_steps, schedule.final) == (0.1, 3, 21, 0.0)


# short on the linear schedule (models.OneCycle) with Adam; short as it is, on its cosine with its
# classifier-scaled SGD (momentum slots), precision auto and Cutout, as ten and long: all across a kill.
@pytest.mark.parametrize("recipe, options", [
    ("short", ["--schedule", "linear", "--optimizer", "adam", "--learning-rate", "0.004", "--cutout", "0"]),
    ("short", ["--cutout", "4"])])
def test_a_killed_fast_run_resumes_on_the_same_schedule(recipe, options, cifar_dir, tmp_path, capsys):
    """A 2-epoch --recipe short run killed after epoch 1 and resumed has, epoch by epoch, the
    learning rates (and, same seed and data, nearly the same losses) of the run left alone."""
    argv = ["vgg16", "--recipe", recipe, "--data-dir", cifar_dir, "--epochs", "2", "--limit", "64",
            "--batch-size", "16", "--seed", "3", *options]
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    with copied_when_killed(whole, killed, after_epoch=1):
        assert train.main([*argv, "--run-dir", whole]) == 0
    expected = read(whole, rundir.HISTORY_FILE)
    config, _ = check_run_folder(whole, "vgg16", epochs=2, best_is_lowest=False)
    assert config["settings"]["recipe"] == recipe and config["model_epoch"] == "last"
    assert config["parameters"] == 1_186_346
    assert read(os.path.join(killed, CHECKPOINT_DIR), STATE_FILE)["epoch"] == 1
    assert read(killed, rundir.HISTORY_FILE)["epoch"] == [1]
    expect_exit_2(capsys, ["vgg16", "--resume", "--run-dir", killed, "--recipe", "paper"],
                  f"recipe differs (saved '{recipe}', given 'paper')")
    saved_precision = read(killed, rundir.CONFIG_FILE)["settings"]["precision"]
    # Resumed on a machine of the other kind: the precision the run started with is kept.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rundir, "cpu_description", lambda: ("another CPU", saved_precision == "float32"))
        assert train.main(["vgg16", "--resume", "--run-dir", killed]) == 0
    resumed = read(killed, rundir.HISTORY_FILE)
    assert resumed["epoch"] == [1, 2]
    assert resumed["learning_rate"] == pytest.approx(expected["learning_rate"], rel=1e-6)
    assert resumed["learning_rate"][1] > 0.5 * config["settings"]["learning_rate"]  # past the warm-up, not back at 0
    # The rate epoch 2 started at is the run's own schedule (cosine or linear) at step 4 of 8: 64 images, batch 16.
    schedule = recipes.make_optimizer(recipes.load_settings(killed), steps_per_epoch=4)._learning_rate
    assert resumed["learning_rate"][1] == pytest.approx(float(schedule(4)), rel=1e-6)
    assert resumed["loss"][0] == pytest.approx(expected["loss"][0], rel=1e-5)  # same first epoch
    assert read(killed, rundir.CONFIG_FILE)["settings"] == config["settings"]  # precision included, as resolved
    assert read(killed, rundir.CONFIG_FILE)["settings"]["precision"] == saved_precision


@pytest.mark.parametrize("augmentation, augment_validation", [
    ("idg", False), ("idg", True), ("fast", False), ("fast", True), ("crop", False), ("none", False)])
def test_make_inputs_validates_on_the_held_out_images_and_without_them_on_none(augmentation, augment_validation):
    images, labels = np.zeros((40, 32, 32, 3), np.uint8), np.arange(40) % 10
    settings = dataclasses.replace(recipes.Settings(), augmentation=augmentation, batch_size=8,
                                   augment_validation=augment_validation)
    stats = data.compute_stats(images[:32] + 1)
    held = train.make_inputs(settings, images[:32], labels[:32], images[32:], labels[32:], stats, 0, 0)
    valid = held["validation_data"]
    if isinstance(valid, tuple):  # clean arrays
        assert not augment_validation and valid[0].shape == (8, 32, 32, 3) and valid[1].shape == (8, 10)
        assert held["validation_batch_size"] == 8
    else:  # a pipeline: an ImageDataGenerator flow or a tf.data dataset, of the 8 held-out images
        batches = [valid[index] for index in range(len(valid))] if augmentation == "idg" else list(valid)
        assert sum(len(x) for x, _ in batches) == 8
    none = train.make_inputs(settings, images[:32], labels[:32], images[:0], labels[:0], stats, 0, 0)
    assert not [key for key in none if key.startswith("validation")]
    assert {key: type(value) for key, value in none.items()} == {
        key: type(value) for key, value in held.items() if not key.startswith("validation")}


def test_validation_split_0_trains_on_every_image_validates_on_none_and_resumes(cifar_dir, tmp_path, capsys):
    """--validation-split 0: all the training images, no validation pass, a run that resumes, a
    record that evaluate.py and results.py take."""
    import evaluate
    import results
    from cifar_fixtures import make_images
    argv = ["vgg16", "--recipe", "short", "--validation-split", "0", "--data-dir", cifar_dir, "--epochs", "2",
            *SMALL]
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    with copied_when_killed(whole, killed, after_epoch=1):
        assert train.main([*argv, "--run-dir", whole]) == 0
    out = capsys.readouterr().out
    assert "64 training images (--limit 64), none held out for validation (--validation-split 0)" in out
    assert "model.keras: last epoch 2; run folder" in out and "val_loss" not in out
    config = read(whole, rundir.CONFIG_FILE)
    assert config["split"] == {"train": 64, "valid": 0} and config["settings"]["validation_split"] == 0
    (x_all, _), _ = data.load_cifar10(cifar_dir)
    assert data.load_stats(os.path.join(whole, rundir.STATS_FILE))["mean"] == pytest.approx(
        data.compute_stats(x_all[:64])["mean"])  # the first 64 of all 50,000, in their order
    history = read(whole, rundir.HISTORY_FILE)
    assert history["val_loss"] == [None, None] and history["val_accuracy"] == [None, None]
    assert all(loss > 0 for loss in history["loss"])
    assert train.main(["vgg16", "--resume", "--run-dir", killed]) == 0
    resumed = read(killed, rundir.HISTORY_FILE)
    assert resumed["epoch"] == [1, 2] and resumed["val_loss"] == [None, None]
    assert resumed["learning_rate"] == pytest.approx(history["learning_rate"], rel=1e-6)
    x_test, y_test = make_images(64, seed=4)
    evaluate.evaluate_run(whole, x_test, y_test, batch_size=32)
    records = str(tmp_path / "results")
    assert results.main(["--results-dir", records, "collect", whole]) == 0
    row = results.records_table(records).splitlines()[2]
    assert "--validation-split 0.0 " in row and "| none (--validation-split 0) |" in row


def test_init_reinitializes_a_new_run_from_its_standardized_training_images(cifar_dir, tmp_path, monkeypatch):
    calls, initialize = [], models.initialize
    def spy(model, init, images):
        calls.append((init, images.shape, float(images.mean()), float(images.std())))
        return initialize(model, init, images)
    monkeypatch.setattr(models, "initialize", spy)
    run_dir = str(tmp_path / "run")
    assert train.main(["vgg16", "--recipe", "short", "--init", "whiten", "--epochs", "1", "--data-dir",
                       cifar_dir, "--run-dir", run_dir, *SMALL]) == 0
    [(init, shape, mean, std)] = calls
    assert init == "whiten" and shape == (64, 32, 32, 3)  # --limit 64: every training image there is
    assert abs(mean) < 1e-3 and std == pytest.approx(1, abs=1e-3)  # what the network is fed
    assert read(run_dir, rundir.CONFIG_FILE)["settings"]["init"] == "whiten"


def test_a_diverged_run_stops_at_once_and_keeps_no_nan_epoch(cifar_dir, tmp_path, capsys):
    """A cosine run at a learning rate of 1e30 trained three epochs of loss
    nan, then exit 0 with a model of NaN weights. Its warm-up starts at 0, so epoch 1 is still
    finite and the divergence comes in epoch 2: the run must stop there, keep epoch 1 whole."""
    run = str(tmp_path / "nan")
    argv = ["alexnet", "--recipe", "short", "--optimizer", "adam", "--learning-rate", "1e30", "--data-dir", cifar_dir,
            "--epochs", "3",
            *SMALL]
    expect_exit_2(capsys, [*argv, "--run-dir", run], "train.py: error: training diverged in epoch 2, step ")
    with pytest.raises(SystemExit):  # again, to read the whole line
        train.main(["alexnet", "--resume", "--run-dir", run])
    err = capsys.readouterr().err
    assert "loss nan" in err or "loss inf" in err
    assert f"epoch 1 is the last one kept in {run}; try a lower --learning-rate than 1e+30" in err
    state = read(os.path.join(run, CHECKPOINT_DIR), STATE_FILE)
    assert state["epoch"] == 1 and read(run, rundir.HISTORY_FILE)["epoch"] == [1]
    assert np.isfinite(read(run, rundir.HISTORY_FILE)["loss"][0])
    assert read(run, rundir.CONFIG_FILE)["status"] == "running"  # never "complete"
    model = models.load_model(run)
    assert all(np.isfinite(weight).all() for weight in model.get_weights())
    # The same rules as any resume: a new learning rate is refused (a new run takes it).
    expect_exit_2(capsys, ["alexnet", "--resume", "--run-dir", run, "--learning-rate", "1e-3"],
                  "learning_rate differs (saved 1e+30, given 0.001)")


def test_eta_line_tells_the_whole_runs_duration():
    line = eta_line(600.0, 1, 300, may_stop_early=True)
    assert "epoch 1 took 10.0 min" in line and "300 epochs take 2.1 days in all" in line
    assert "the 299 left about 2.1 days" in line and "sooner if early stopping ends it" in line
    assert "sooner" not in eta_line(30.0, 1, 10)


def test_a_run_folder_in_use_is_refused_even_with_resume_or_overwrite(vgg16_run, cifar_dir, tmp_path, capsys):
    """While a live train.py holds a run folder (here: this test holds its lock, as that process
    would), a second writer gets one line and touches nothing, --resume and --overwrite included."""
    live_dir = str(tmp_path / "live")
    shutil.copytree(vgg16_run, live_dir)
    config = read(live_dir, rundir.CONFIG_FILE)
    rundir.write_json(os.path.join(live_dir, rundir.CONFIG_FILE), dict(config, status="running"))  # mid-run
    before = {name: open(os.path.join(live_dir, name), "rb").read() for name in os.listdir(live_dir)}
    live = rundir.RunLock(live_dir).acquire()
    try:
        in_use = f"run folder '{live_dir}' is in use by another train.py (pid {os.getpid()})"
        expect_exit_2(capsys, ["vgg16", "--data-dir", cifar_dir, "--run-dir", live_dir, *SMALL, "--overwrite"],
                      in_use)
        expect_exit_2(capsys, ["vgg16", "--run-dir", live_dir, "--resume"], in_use)
        fresh = str(tmp_path / "fresh")
        os.makedirs(fresh)
        held = rundir.RunLock(fresh).acquire()
        expect_exit_2(capsys, ["alexnet", "--data-dir", cifar_dir, "--run-dir", fresh, *SMALL], "is in use")
        held.release()
        assert {name: open(os.path.join(live_dir, name), "rb").read() for name in os.listdir(live_dir)} == before
    finally:
        live.release()
    # Released (as a process's end releases it), the folder is usable again.
    rundir.RunLock(live_dir).acquire().release()


def test_weight_decay_shrinks_kernels_only():
    settings = dataclasses.replace(recipes.recipe_settings("short", "vgg16"), optimizer="adam", learning_rate=4e-3,
                                   weight_decay=0.05, warmup_fraction=0.0)
    model = models.build_model("vgg16")
    optimizer = recipes.make_optimizer(settings, steps_per_epoch=10)
    before = {v.path: np.array(v) for v in model.trainable_variables}
    optimizer.apply_gradients([(keras.ops.zeros_like(v), v) for v in model.trainable_variables])
    factor = 1 - settings.learning_rate * settings.weight_decay  # Adam's own step is 0 on zero gradients
    for variable in model.trainable_variables:
        expected = before[variable.path] * (factor if variable.name == "kernel" else 1)
        np.testing.assert_allclose(np.array(variable), expected, rtol=1e-6, err_msg=variable.path)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_classifier_lr_scale_slows_the_classifier_alone_and_survives_a_save(optimizer, tmp_path):
    def one_step(scale):
        settings = dataclasses.replace(recipes.recipe_settings("short", "alexnet"), optimizer=optimizer,
                                       learning_rate=0.1,
                                       classifier_lr_scale=scale, warmup_fraction=0.0, weight_decay=0.0)
        keras.utils.set_random_seed(0)
        model = models.build_model("alexnet")
        recipes.compile_model(model, settings, steps_per_epoch=10)
        before = {variable.path: variable.numpy().copy() for variable in model.trainable_variables}
        x = np.random.default_rng(0).normal(size=(16, 32, 32, 3)).astype("float32")
        model.train_on_batch(x, keras.utils.to_categorical(np.arange(16) % 10, 10))
        return model, {variable.path: variable.numpy() - before[variable.path] for variable in model.trainable_variables}
    _, plain = one_step(1.0)
    model, scaled = one_step(1 / 64)
    # The first step from the same weights and batch: the classifier's is 1/64 of plain's, the rest equal
    # (to float32's resolution of a weight near 0.05, 4e-9: the steps are read as differences of weights).
    np.testing.assert_allclose(scaled["predictions/kernel"], plain["predictions/kernel"] / 64, rtol=1e-3, atol=1e-8)
    np.testing.assert_allclose(scaled["fc2/kernel"], plain["fc2/kernel"], rtol=1e-5, atol=1e-8)
    assert np.abs(plain["predictions/kernel"]).max() > 0
    model.save(tmp_path / rundir.MODEL_FILE)  # a run folder's model.keras holds the optimizer
    loaded = models.load_model(str(tmp_path))
    assert loaded.optimizer.classifier_lr_scale == pytest.approx(1 / 64)

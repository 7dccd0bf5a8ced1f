"""--ema-momentum and --swa-epochs: the weights' averages, what validation and model.keras hold, and a kill."""
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import averaging
import checkpoint
import data
import models
import recipes
import rundir
import train
from checkpoint import AVERAGE_SUFFIX, CHECKPOINT_DIR, STATE_FILE
from cifar_fixtures import copied_when_killed

# alexnet: the quickest network here; float32, so the figures compared are the same on every CPU.
RUN = ["alexnet", "--recipe", "short", "--precision", "float32", "--epochs", "2", "--limit", "128",
       "--batch-size", "32", "--seed", "4", "--ema-momentum", "0.9", "--ema-every", "2"]
# The same with SWA over the last of 3 epochs, at a constant 0.01 (the recipe's schedule decays to it first).
RUN_SWA = [*RUN[:RUN.index("--ema-momentum")], "--epochs", "3", "--swa-epochs", "1", "--min-lr", "0.01"]


def read(run_dir, name):
    with open(os.path.join(run_dir, name)) as handle:
        return json.load(handle)


def test_the_average_follows_every_weight_and_validation_sees_it():
    """Every float weight, BatchNorm's moving statistics included, averaged on every 2nd step with the
    warming-up decay; validation runs on the average and training goes on from the trained weights."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization(),
                              keras.layers.Dropout(0.1), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    variables = averaging.averaged_variables(model)
    assert any("moving_mean" in variable.path for variable in variables)
    x, y = np.random.rand(64, 4).astype("float32"), np.random.rand(64, 2).astype("float32")
    start = [variable.numpy() for variable in variables]

    class Spy(keras.callbacks.Callback):
        steps, validated = [], []
        def on_train_batch_end(self, batch, logs=None):
            self.steps.append([variable.numpy() for variable in variables])
        def on_test_begin(self, logs=None):  # after WeightAverage's: sees what validation sees
            self.validated.append([variable.numpy() for variable in variables])

    average, spy = averaging.WeightAverage(momentum=0.9, every=2), Spy()
    model.fit(x, y, batch_size=16, epochs=2, validation_data=(x, y), callbacks=[average, spy], verbose=0)
    expected, updates = start, 0
    for step, weights in enumerate(spy.steps, 1):
        if step % 2 == 0:
            updates += 1
            decay = min(0.9, (1 + updates) / (10 + updates))  # 0.18, 0.25, 0.31, 0.36
            expected = [decay * old + (1 - decay) * new for old, new in zip(expected, weights)]
    assert average.updates == updates == 4
    for mine, theirs, seen in zip(expected, average.values(), spy.validated[-1]):
        np.testing.assert_allclose(theirs, mine, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(seen, mine, rtol=1e-6, atol=1e-7)
    for trained, now in zip(spy.steps[-1], variables):  # the trained weights are back after validation
        np.testing.assert_array_equal(now.numpy(), trained)
    assert not np.allclose(spy.steps[-1][0], expected[0])  # and they are not the average


@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_swa_is_the_plain_mean_of_the_last_epochs_with_batchnorm_statistics_of_its_own(steps_per_execution):
    """Snapshots at the ends of epochs 2 and 3 (after step 4), averaged with equal weights, also when
    a call runs two steps; BatchNorm's statistics are those of the averaged kernels on the given
    images, not the mean of the snapshots'; epoch 1's validation sees the trained weights."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization(momentum=0.0),
                              keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", steps_per_execution=steps_per_execution)
    variables = averaging.averaged_variables(model)
    x, y = np.random.rand(64, 4).astype("float32"), np.random.rand(64, 2).astype("float32")

    class Spy(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs, self.validated = [], []
        def on_epoch_end(self, epoch, logs=None):  # after validation: the trained weights are back
            self.epochs.append([variable.numpy() for variable in variables])
        def on_test_begin(self, logs=None):
            self.validated.append([variable.numpy() for variable in variables])

    # batch_size 64: BatchNorm (momentum 0) keeps the statistics of one batch of all 64 images.
    average, spy = averaging.WeightAverage(None, every=4, start=4, batchnorm_images=x, batch_size=64), Spy()
    model.fit(x, y, batch_size=16, epochs=3, validation_data=(x, y), callbacks=[average, spy], verbose=0)
    assert average.updates == 2
    np.testing.assert_array_equal(spy.validated[0][0], spy.epochs[0][0])  # epoch 1: the trained kernel
    mean = [(a + b) / 2 for a, b in zip(spy.epochs[1], spy.epochs[2])]
    features = x @ mean[0] + mean[1]
    names = [variable.path.split("/")[-1] for variable in variables]
    for index, (name, mine, theirs, seen) in enumerate(zip(names, mean, average.values(), spy.validated[-1])):
        if name == "moving_mean":
            mine = features.mean(axis=0)
            assert not np.allclose(theirs, mean[index])
        elif name == "moving_variance":
            mine = features.var(axis=0)
        np.testing.assert_allclose(theirs, mine, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(seen, theirs, rtol=1e-6, atol=1e-7)
    assert not np.allclose(spy.epochs[-1][0], spy.validated[-1][0])  # after validation: the trained weights


@pytest.mark.parametrize("argv", [RUN, RUN_SWA], ids=["ema", "swa"])
def test_model_keras_is_the_average_that_validation_measured(argv, cifar_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    assert train.main([*argv, "--data-dir", cifar_dir, "--run-dir", run_dir]) == 0
    config, history = read(run_dir, rundir.CONFIG_FILE), read(run_dir, rundir.HISTORY_FILE)
    assert config["model_epoch"] == "last (weight average)"
    if argv is RUN_SWA:
        assert config["settings"]["swa_epochs"] == 1 and history["learning_rate"][-1] == pytest.approx(0.01)
    else:
        assert config["settings"]["ema_momentum"] == 0.9 and config["settings"]["ema_every"] == 2
    _, _, x_valid, y_valid = data.load_split(cifar_dir, 128, 32)
    stats = data.load_stats(os.path.join(run_dir, rundir.STATS_FILE))
    model = keras.saving.load_model(os.path.join(run_dir, rundir.MODEL_FILE))
    loss, accuracy = model.evaluate(data.standardize(x_valid, stats), keras.utils.to_categorical(y_valid, 10),
                                    verbose=0)
    assert accuracy == pytest.approx(history["val_accuracy"][-1], abs=1e-6)
    assert loss == pytest.approx(history["val_loss"][-1], rel=1e-4)


def test_a_killed_run_resumes_with_its_average_exactly(cifar_dir, tmp_path):
    """Killed after epoch 1's commit: the checkpoint holds the trained weights, model.keras and the
    file beside the checkpoint the average; the resumed run starts from that very average, with the
    update count of the step counter, not from a fresh copy of the weights."""
    run_dir = str(tmp_path / "killed")
    with copied_when_killed(str(tmp_path / "whole"), run_dir, after_epoch=1):
        assert train.main([*RUN, "--data-dir", cifar_dir, "--run-dir", str(tmp_path / "whole")]) == 0
    folder = os.path.join(run_dir, CHECKPOINT_DIR)
    state = read(folder, STATE_FILE)
    assert state["average"] == "epoch_0001" + AVERAGE_SUFFIX
    with np.load(os.path.join(folder, state["average"])) as arrays:
        saved = [arrays[f"arr_{index}"] for index in range(len(arrays.files))]
    trained = keras.saving.load_model(os.path.join(folder, state["checkpoint"]))
    kept = keras.saving.load_model(os.path.join(run_dir, rundir.MODEL_FILE))
    for array, weight in zip(saved, averaging.averaged_variables(kept)):
        np.testing.assert_array_equal(weight.numpy(), array)  # model.keras: the average
    assert not all(np.array_equal(array, weight.numpy())
                   for array, weight in zip(saved, averaging.averaged_variables(trained)))

    # A kill after state.json and before model.keras was rewritten leaves the previous epoch's
    # model.keras (here: the trained weights); the resume writes it again from the average.
    shutil.copy(os.path.join(folder, state["checkpoint"]), os.path.join(run_dir, rundir.MODEL_FILE))
    settings = recipes.load_settings(run_dir)
    model = models.build_model("alexnet", dropout_scale=settings.dropout_scale, bn_momentum=settings.bn_momentum)
    recipes.compile_model(model, settings, steps_per_epoch=4)
    average = averaging.WeightAverage(settings.ema_momentum, settings.ema_every)
    checkpoint.restore(model, run_dir, run_dir, state, tf.distribute.get_strategy(), average)
    rewritten = keras.saving.load_model(os.path.join(run_dir, rundir.MODEL_FILE))
    for array, weight in zip(saved, averaging.averaged_variables(rewritten)):
        np.testing.assert_array_equal(weight.numpy(), array)

    started = {}
    begin = averaging.WeightAverage.on_train_begin
    def spy(self, logs=None):
        begin(self, logs)
        started.update(values=self.values(), updates=self.updates)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(averaging.WeightAverage, "on_train_begin", spy)
        assert train.main(["alexnet", "--resume", "--run-dir", run_dir]) == 0
    for mine, theirs in zip(started["values"], saved):
        np.testing.assert_array_equal(mine, theirs)
    assert started["updates"] == 4 // 2  # 128 images / batch 32 = 4 steps, one update every 2
    assert read(run_dir, rundir.HISTORY_FILE)["epoch"] == [1, 2]


def test_a_run_killed_inside_swa_resumes_with_its_mean_so_far(cifar_dir, tmp_path):
    """SWA over epochs 2 and 3, killed after epoch 2's commit: the resumed run starts from the one
    snapshot averaged (its BatchNorm statistics recomputed) and adds epoch 3's with weight 1/2."""
    run_dir = str(tmp_path / "killed")
    argv = [*RUN_SWA[:RUN_SWA.index("--swa-epochs")], "--swa-epochs", "2", "--min-lr", "0.01"]
    with copied_when_killed(str(tmp_path / "whole"), run_dir, after_epoch=2):
        assert train.main([*argv, "--data-dir", cifar_dir, "--run-dir", str(tmp_path / "whole")]) == 0
    state = read(os.path.join(run_dir, CHECKPOINT_DIR), STATE_FILE)
    assert state["epoch"] == 2
    with np.load(os.path.join(run_dir, CHECKPOINT_DIR, state["average"])) as arrays:
        saved = [arrays[f"arr_{index}"] for index in range(len(arrays.files))]

    started, decays = {}, []
    begin, decay = averaging.WeightAverage.on_train_begin, averaging.WeightAverage.decay
    def spy(self, logs=None):
        begin(self, logs)
        started.update(values=self.values(), updates=self.updates)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(averaging.WeightAverage, "on_train_begin", spy)
        patch.setattr(averaging.WeightAverage, "decay", lambda self, update: decays.append(decay(self, update))
                      or decays[-1])
        assert train.main(["alexnet", "--resume", "--run-dir", run_dir]) == 0
    assert started["updates"] == 1 and decays == [0.5]
    for mine, theirs in zip(started["values"], saved):
        np.testing.assert_array_equal(mine, theirs)
    assert read(run_dir, rundir.HISTORY_FILE)["epoch"] == [1, 2, 3]


@pytest.mark.parametrize("argv, message", [
    (["vgg16", "--ema-momentum", "0.99"], "--ema-momentum is not used with --schedule plateau (recipe paper)"),
    (["vgg16", "--recipe", "short", "--ema-every", "3"], "--ema-every is not used with --ema-momentum 0"),
    (["vgg16", "--recipe", "short", "--ema-momentum", "1"], "ema momentum must lie in [0, 1), received 1.0"),
    (["vgg16", "--recipe", "short", "--ema-momentum", "0.9", "--ema-every", "0"],
     "ema every must be an integer >= 1, received 0"),
    (["vgg16_pretrained", "--schedule", "cosine", "--weights", "none", "--ema-momentum", "0.9"],
     "--ema-momentum applies to vgg16 and alexnet trained on one device"),
    (["vgg16", "--recipe", "short", "--ema-momentum", "0.9", "--steps-per-execution", "2"],
     "it needs --steps-per-execution 1, not 2"),
    (["vgg16", "--recipe", "short", "--ema-momentum", "0.9", "--ema-every", "5", "--epochs", "1", "--limit", "64",
      "--batch-size", "32"], "--ema-every 5 is more than the run's 2 steps"),
    (["vgg16", "--swa-epochs", "5"], "--swa-epochs is not used with --schedule plateau (recipe paper)"),
    (["vgg16", "--recipe", "short", "--swa-epochs", "5"], "--swa-epochs averages weights trained at --min-lr, "
     "which is 0 here"),
    (["vgg16", "--recipe", "short", "--swa-epochs", "26", "--min-lr", "0.01"],
     "swa epochs must be a whole number of epochs after the warm-up, under 25.5 here, received 26"),
    (["vgg16", "--recipe", "short", "--swa-epochs", "5", "--min-lr", "0.01", "--ema-momentum", "0.9"],
     "--swa-epochs and --ema-momentum each average the weights; choose one"),
])
def test_bad_average_input_is_one_line_and_exit_2(argv, message, cifar_dir, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    with pytest.raises(SystemExit) as raised:
        train.main([*argv, "--data-dir", cifar_dir, "--run-dir", run_dir])
    err = capsys.readouterr().err
    assert raised.value.code == 2 and err.startswith("train.py: error: ") and message in err, err
    assert "Traceback" not in err and err.count("\n") == 1 and not os.path.exists(run_dir)

"""vgg16_pretrained done right (--recipe transfer): ImageNet preprocessing in the model, cached
frozen features, fine-tuning, resume in either phase, bad weights files.

ImageNet weights cannot be downloaded here: a randomly initialized VGG16 base saved in
Keras' notop .h5 layout stands in for them, and images are resized to 32x32 (not 224) so
that the base runs in milliseconds.
"""
import errno
import json
import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

import data
import evaluate
import features
import models
import plots
import predict_image
import recipes
import rundir
import train
from checkpoint import CHECKPOINT_DIR, STATE_FILE, RunFolderCheckpoint
from cifar_fixtures import make_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32  # --image-size of the runs here: the smallest the base takes


def save_notop_h5(base, path):
    """Write a VGG16 base's weights as Keras' ImageNet notop file is laid out (legacy HDF5)."""
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, base)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    keras.utils.set_random_seed(7)
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    path = str(tmp_path_factory.mktemp("weights") / models.VGG16_NOTOP_FILE)
    save_notop_h5(base, path)
    return path


def transfer_argv(cifar_dir, weights_file, cache_dir, *extra):
    return ["vgg16_pretrained", "--recipe", "transfer", "--data-dir", cifar_dir, "--weights", weights_file,
            "--image-size", str(SIZE), "--limit", "64", "--batch-size", "32", "--epochs", "2",
            "--fine-tune-epochs", "2", "--seed", "5", "--cache-dir", str(cache_dir), *extra]


def read(folder, name):
    with open(os.path.join(folder, name)) as handle:
        return json.load(handle)


# --- The model ------------------------------------------------------------------------

def test_imagenet_preprocessing_is_kerass_and_adds_no_parameters():
    model = models.build_model("vgg16_pretrained", weights=None, preprocessing="imagenet")
    _, trainable, frozen = models.count_parameters(model)
    assert (trainable, frozen) == (12_850_698, 14_714_688)  # the report's Figure 4 split
    assert [layer.name for layer in model.layers[:3]] == ["image", "imagenet_preprocessing", "resizing"]
    pixels = make_images(4, seed=3)[0].astype("float32")
    layer = model.get_layer("imagenet_preprocessing")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(pixels)),
                               keras.applications.vgg16.preprocess_input(pixels.copy()), atol=1e-4)
    # BGR, then ImageNet's means: a red pixel becomes (0 - 103.939, 0 - 116.779, 255 - 123.68).
    red = np.zeros((1, 1, 1, 3), "float32")
    red[..., 0] = 255
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(red)).ravel(), [-103.939, -116.779, 131.32],
                               atol=1e-3)


def test_model_with_preprocessing_round_trips_in_safe_mode(weights_file, tmp_path):
    model = models.build_model("vgg16_pretrained", weights=weights_file, image_size=SIZE,
                               preprocessing="imagenet")
    pixels = make_images(8, seed=4)[0].astype("float32")
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0), atol=1e-6)


def test_the_weights_file_is_loaded(weights_file):
    keras.utils.set_random_seed(7)  # the weights_file fixture's base, built again
    saved = keras.applications.VGG16(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    keras.utils.set_random_seed(0)  # the model's own random start differs
    model = models.build_model("vgg16_pretrained", weights=weights_file, image_size=SIZE)
    for name in ("block1_conv1", "block5_conv3"):
        np.testing.assert_array_equal(model.get_layer("vgg16").get_layer(name).get_weights()[0],
                                      saved.get_layer(name).get_weights()[0])


@pytest.mark.parametrize("damage, reason", [
    ("missing", "does not exist"),
    ("folder", "is a folder; pass the .h5 file inside it"),
    ("text", "is not an HDF5 file"),
    ("truncated", "is truncated or damaged"),
    ("resnet", "does not hold the weights of a VGG16 base"),
])
def test_bad_weights_files_are_one_line_and_leave_no_run_folder(weights_file, cifar_dir, tmp_path, capsys,
                                                               damage, reason):
    path = str(tmp_path / "weights.h5")
    if damage == "folder":
        os.makedirs(path)
    elif damage == "text":
        with open(path, "w") as handle:
            handle.write("not weights\n")
    elif damage == "truncated":
        with open(weights_file, "rb") as source, open(path, "wb") as target:
            target.write(source.read()[:200_000])
    elif damage == "resnet":
        save_notop_h5(keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3)),
                      path)
    run_dir = str(tmp_path / "run")
    with pytest.raises(SystemExit) as exit_info:
        train.main(transfer_argv(cifar_dir, path, tmp_path / "cache", "--run-dir", run_dir))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("train.py: error: weights file ") and reason in error[0]
    assert path in error[0] and not os.path.exists(run_dir)


def test_flags_of_the_pretrained_model_are_refused_elsewhere(cifar_dir, capsys, tmp_path):
    for argv, message in (
            (["vgg16", "--recipe", "transfer"], "recipe 'transfer' does not serve vgg16"),
            (["alexnet", "--fine-tune-epochs", "2"], "--fine-tune-epochs applies to vgg16_pretrained only"),
            (["vgg16_pretrained", "--fine-tune-epochs", "1", "--fine-tune-blocks", "block6"], "unknown block 'block6'"),
            (["vgg16_pretrained", "--image-size", "16"], "image size must be an integer >= 32"),
            (["vgg16_pretrained", "--recipe", "transfer", "--augment-validation"], "--augment-validation"),
            (["vgg16_pretrained", "--preprocessing", "imagenet"], "--augmentation idg (the report's "),
            (["vgg16_pretrained", "--fine-tune-learning-rate", "1e-4"], "is not used with --fine-tune-epochs 0"),
            (["vgg16_pretrained", "--cache-dir", str(tmp_path)], "--cache-dir is not used without --cache-features"),
            (["vgg16", "--cache-dir", str(tmp_path)], "--cache-dir applies to vgg16_pretrained"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            train.main([*argv, "--data-dir", cifar_dir, "--run-dir", str(tmp_path / "never")])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "never")


def test_a_fresh_interpreter_loads_a_model_with_imagenet_preprocessing(weights_file, tmp_path):
    """model.keras holds the registered layer: models.load_model, as every script loads it, registers it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model = models.build_model("vgg16_pretrained", weights=weights_file, image_size=SIZE, preprocessing="imagenet")
    model.save(str(run_dir / rundir.MODEL_FILE))
    script = ("import sys, models\n"
              "model = models.load_model(sys.argv[1])\n"
              "print(model.get_layer('imagenet_preprocessing').__class__.__name__)\n")
    process = subprocess.run([sys.executable, "-c", script, str(run_dir)], cwd=ROOT, capture_output=True, text=True)
    assert process.returncode == 0, process.stderr[-2000:]
    assert process.stdout.strip().splitlines()[-1] == "ImageNetPreprocessing"


def test_head_weights_are_the_heads_share_of_the_models():
    """A resumed cached run hands EarlyStopping the head's best weights, not the whole model's."""
    keras.utils.set_random_seed(1)
    model = models.build_model("vgg16_pretrained", weights=None, image_size=SIZE)
    head = models.head_model(model)
    best = [weight + 1.0 for weight in model.get_weights()]
    share = train.head_weights(model, head, best)
    assert len(share) == len(head.get_weights()) == 4 < len(best)
    np.testing.assert_array_equal(share[0], model.get_layer("fc1").get_weights()[0] + 1.0)
    head.set_weights(share)  # what EarlyStopping does with them at the end of the head phase
    np.testing.assert_array_equal(model.get_layer("predictions").get_weights()[1], best[-1])


# --- The cache --------------------------------------------------------------------------

def _small_model(weights_file, preprocessing="imagenet"):
    keras.utils.set_random_seed(0)
    return models.build_model("vgg16_pretrained", weights=weights_file, image_size=SIZE,
                              preprocessing=preprocessing)


def _parts(images):
    return {"train": images, "train_mirror": images[:, :, ::-1]}


def _pixels(batch):
    return batch.astype("float32")


def test_head_trained_on_the_cache_predicts_like_the_assembled_model(weights_file, tmp_path):
    """The head shares the model's layers: trained from cached features, it is the model's head."""
    model = _small_model(weights_file)
    images, labels = make_images(96, seed=5)
    cache, _, built = features.load_or_build(models.feature_extractor(model), _parts(images), _pixels,
                                             str(tmp_path), batch_size=32, log=lambda line: None)
    assert built and cache["train"].dtype == np.float16
    before = model.predict(_pixels(images), verbose=0)
    head = models.head_model(model)
    recipes.compile_model(model, recipes.recipe_settings("transfer", "vgg16_pretrained"), steps_per_epoch=3)
    head.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"])
    head.fit(features.CachedFeatures(cache["train"], data.one_hot(labels), 32, mirrors=cache["train_mirror"],
                                     shuffle=True), epochs=2, verbose=0)
    after = model.predict(_pixels(images), verbose=0)
    assert np.abs(after - before).max() > 1e-3  # training the head changed the model
    from_cache = head.predict(np.asarray(cache["train"], "float32"), verbose=0)
    np.testing.assert_allclose(from_cache, after, atol=2e-3)  # float16 features: a few 1e-4 apart


def test_mirror_features_are_the_flipped_images(weights_file, tmp_path):
    model = _small_model(weights_file)
    images, _ = make_images(16, seed=6)
    cache, _, _ = features.load_or_build(models.feature_extractor(model), _parts(images), _pixels,
                                         str(tmp_path), batch_size=8, log=lambda line: None)
    extractor = models.feature_extractor(model)
    np.testing.assert_allclose(cache["train_mirror"], extractor.predict(_pixels(images[:, :, ::-1]), verbose=0),
                               rtol=2e-3, atol=2e-3)
    assert np.abs(np.asarray(cache["train_mirror"], "float32") - np.asarray(cache["train"], "float32")).max() > 0.01


def test_cached_batches_flip_about_half_and_follow_seed_and_epoch():
    plain = np.zeros((400, 2), "float16")
    mirrors = np.ones((400, 2), "float16")
    labels = np.arange(400)
    first = features.CachedFeatures(plain, labels, 400, mirrors=mirrors, shuffle=True, seed=1)
    x, y = first[0]
    assert 150 < x[:, 0].sum() < 250 and sorted(y) == list(range(400))
    again = features.CachedFeatures(plain, labels, 400, mirrors=mirrors, shuffle=True, seed=1)
    np.testing.assert_array_equal(again[0][1], y)  # same seed and epoch: same order
    first.on_epoch_end()
    assert not np.array_equal(first[0][1], y)  # a new epoch: a new order and new flips
    resumed = features.CachedFeatures(plain, labels, 400, mirrors=mirrors, shuffle=True, seed=1, epoch=1)
    np.testing.assert_array_equal(resumed[0][0], first[0][0])  # a resumed run draws that epoch's flips


def test_cache_is_reused_only_for_the_same_weights_and_images(weights_file, tmp_path):
    images, _ = make_images(32, seed=8)
    quiet = {"log": lambda line: None, "batch_size": 16}
    model = _small_model(weights_file)
    first, folder, built = features.load_or_build(models.feature_extractor(model), _parts(images), _pixels,
                                                  str(tmp_path), **quiet)
    assert built and os.path.isdir(folder)
    first = np.array(first["train"])  # a copy: the file is damaged below, under its memory map
    again, same_folder, built = features.load_or_build(models.feature_extractor(_small_model(weights_file)),
                                                       _parts(images), _pixels, str(tmp_path), **quiet)
    assert not built and same_folder == folder
    np.testing.assert_array_equal(again["train"], first)
    del again
    # Other images (another --limit): another cache.
    _, other, built = features.load_or_build(models.feature_extractor(model), _parts(images[:16]), _pixels,
                                             str(tmp_path), **quiet)
    assert built and other != folder
    # Other weights (a changed file): another cache.
    changed = _small_model(None)
    _, other, built = features.load_or_build(models.feature_extractor(changed), _parts(images), _pixels,
                                             str(tmp_path), **quiet)
    assert built and other != folder
    # A damaged cache under the right key is rebuilt, not read.
    part = os.path.join(folder, "train.f16")
    with open(part, "r+b") as handle:
        handle.truncate(100)
    lines = []
    rebuilt, _, built = features.load_or_build(models.feature_extractor(model), _parts(images), _pixels,
                                               str(tmp_path), batch_size=16, log=lines.append)
    assert built and any("rebuilding" in line for line in lines)
    np.testing.assert_array_equal(rebuilt["train"], first)


def test_a_full_disk_while_writing_leaves_no_partial_cache(weights_file, tmp_path, monkeypatch):
    images, _ = make_images(32, seed=9)
    writes = []

    class FillsUp:
        def __init__(self, path, mode):
            self.handle = open(path, mode)

        def write(self, payload):
            writes.append(len(payload))
            if len(writes) > 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(payload)

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(features, "open", FillsUp, raising=False)
    with pytest.raises(rundir.UserError, match="the disk filled up while writing .*partial cache was removed"):
        features.load_or_build(models.feature_extractor(_small_model(weights_file)), _parts(images), _pixels,
                               str(tmp_path), batch_size=8, log=lambda line: None)
    assert len(writes) == 3 and os.listdir(tmp_path) == []


def test_the_partial_cache_of_a_killed_build_is_removed_by_the_next(weights_file, tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"0123abcd.partial-{finished.stdout.strip()}"  # that process has ended
    live = tmp_path / f"4567cdef.partial-{os.getpid()}"  # this one runs
    for folder in (dead, live):
        folder.mkdir()
        (folder / "train.f16").write_bytes(b"\0" * 64)
    images, _ = make_images(16, seed=10)
    lines = []
    features.load_or_build(models.feature_extractor(_small_model(weights_file)), _parts(images), _pixels,
                           str(tmp_path), batch_size=16, log=lines.append)
    assert not dead.exists() and live.exists()
    assert any("was killed" in line for line in lines)


def test_too_little_free_space_is_refused_before_writing(weights_file, tmp_path, monkeypatch):
    images, _ = make_images(32, seed=9)
    monkeypatch.setattr(features.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 1000})())
    with pytest.raises(rundir.UserError, match="has 0.00 GB free and the cache needs"):
        features.load_or_build(models.feature_extractor(_small_model(weights_file)), _parts(images), _pixels,
                               str(tmp_path), batch_size=8, log=lambda line: None)
    assert os.listdir(tmp_path) == []


# --- Whole runs ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def transfer_run(cifar_dir, weights_file, tmp_path_factory):
    """A whole --recipe transfer run: 2 head epochs on cached features, then 2 fine-tuning epochs."""
    root = tmp_path_factory.mktemp("transfer")
    run_dir = str(root / "run")
    assert train.main([*transfer_argv(cifar_dir, weights_file, root / "cache"), "--run-dir", run_dir]) == 0
    return run_dir, root / "cache"


def test_a_transfer_run_records_both_phases(transfer_run, weights_file):
    run_dir, cache_dir = transfer_run
    history = read(run_dir, rundir.HISTORY_FILE)
    assert history["epoch"] == [1, 2, 3, 4] and history["phase"] == [1, 1, 2, 2]
    assert history["learning_rate"][2:] == pytest.approx([1e-5, 1e-5])  # fine-tuning's constant rate
    config = read(run_dir, rundir.CONFIG_FILE)
    assert config["status"] == "complete" and config["model_epoch"] == "last"
    assert config["features"]["built_by_this_run"] and config["features"]["cache"].startswith(str(cache_dir))
    assert config["features"]["bytes"] == (64 * 2 + 32) * 512 * 2  # train, mirrors, validation; 1x1x512 float16
    assert read(run_dir, rundir.STATS_FILE)["input"] == data.PIXEL_INPUT
    model = models.load_model(run_dir)
    # block5 was fine-tuned, block4 was not: compare with the weights file.
    original = models.build_model("vgg16_pretrained", weights=weights_file, image_size=SIZE).get_layer("vgg16")
    tuned = model.get_layer("vgg16")
    np.testing.assert_array_equal(tuned.get_layer("block4_conv3").get_weights()[0],
                                  original.get_layer("block4_conv3").get_weights()[0])
    assert np.abs(tuned.get_layer("block5_conv3").get_weights()[0]
                  - original.get_layer("block5_conv3").get_weights()[0]).max() > 0


def test_scripts_feed_a_transfer_run_pixels(transfer_run, cifar_dir, tmp_path):
    """stats.json says the model preprocesses its own input: evaluate and predict_image give it 0-255."""
    run_dir, _ = transfer_run
    model = models.load_model(run_dir)
    (_, _), (x_test, y_test) = data.load_cifar10(cifar_dir)
    x_test, y_test = x_test[:100], y_test[:100].ravel()
    metrics = evaluate.evaluate_run(run_dir, x_test, y_test, write=False)
    probabilities = model.predict(x_test.astype("float32"), verbose=0)  # raw 0-255 pixels
    loss = float(keras.ops.mean(keras.losses.categorical_crossentropy(data.one_hot(y_test), probabilities)))
    assert metrics["test_loss"] == pytest.approx(loss, rel=1e-5)
    standardized = model.predict(data.standardize(x_test, {"mean": 120.0, "std": 64.0}), verbose=0)
    other = float(keras.ops.mean(keras.losses.categorical_crossentropy(data.one_hot(y_test), standardized)))
    assert abs(other - loss) > 1e-3 * loss  # so feeding it standardized images would show
    stats = data.load_stats(os.path.join(run_dir, rundir.STATS_FILE))
    probabilities = predict_image.classify(model, stats, list(x_test[:4]))
    np.testing.assert_allclose(probabilities, model.predict(x_test[:4].astype("float32"), verbose=0), atol=1e-6)


def test_plots_mark_where_fine_tuning_starts(transfer_run, tmp_path, monkeypatch):
    run_dir, _ = transfer_run
    history = read(run_dir, rundir.HISTORY_FILE)
    captured = {}
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: captured.update(figure=figure))
    plots.plot_curves([("transfer", history, plots.run_schedule(run_dir))], "accuracy", str(tmp_path / "a.png"))
    axes = captured["figure"].axes[0]
    # One solid vertical line between epoch 2 (the head's last) and epoch 3 (fine-tuning's first);
    # the drop from 5e-4 to 1e-5 there is a new optimizer, not a learning-rate cut.
    verticals = [line for line in axes.lines if len(set(line.get_xdata())) == 1 and len(line.get_xdata()) == 2]
    assert [(line.get_linestyle(), line.get_xdata()[0]) for line in verticals] == [("-", 2.5)]
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert "fine-tuning starts" in labels and "learning rate reduced" not in labels
    plots.pyplot().close(captured["figure"])


KILL_POINTS = (1, 2, 3)  # in the head phase, between the phases, in fine-tuning


@pytest.fixture(scope="module")
def killed_transfer_runs(transfer_run, cifar_dir, weights_file, tmp_path_factory):
    """The run folder as SIGKILL leaves it after each epoch of KILL_POINTS, from one killed run.

    The run is killed right after its last kill point's commit; after each earlier commit its
    folder is copied. A copy taken there is what a SIGKILL at that moment leaves on disk (the
    folder lock is the operating system's, held by no one once the process is gone), so one
    killed run serves every kill point for the time of one.
    """
    _, cache_dir = transfer_run
    killed = str(tmp_path_factory.mktemp("killed") / "run")
    script = ("import os, shutil, signal, sys, checkpoint, train\n"
              "commit = checkpoint.RunFolderCheckpoint.commit\n"
              "def commit_then_die(self, epoch):\n"
              "    commit(self, epoch)\n"
              f"    if epoch + 1 == {KILL_POINTS[-1]}:\n"
              "        os.kill(os.getpid(), signal.SIGKILL)\n"
              f"    shutil.copytree({killed!r}, {killed!r} + f'_after_{{epoch + 1}}')\n"
              "checkpoint.RunFolderCheckpoint.commit = commit_then_die\n"
              "train.main(sys.argv[1:])\n")
    argv = [*transfer_argv(cifar_dir, weights_file, cache_dir), "--run-dir", killed]
    process = subprocess.run([sys.executable, "-c", script, *argv], cwd=ROOT, capture_output=True, text=True)
    assert process.returncode == -9, process.stderr[-2000:]
    os.rename(killed, f"{killed}_after_{KILL_POINTS[-1]}")
    return {point: f"{killed}_after_{point}" for point in KILL_POINTS}


@pytest.mark.parametrize("kill_after", KILL_POINTS)
def test_a_killed_transfer_run_resumes_in_its_phase(transfer_run, killed_transfer_runs, kill_after, monkeypatch):
    run_dir, _ = transfer_run
    whole = read(run_dir, rundir.HISTORY_FILE)
    killed = killed_transfer_runs[kill_after]
    state = read(os.path.join(killed, CHECKPOINT_DIR), STATE_FILE)
    assert state["epoch"] == kill_after and state["phase"] == (1 if kill_after < 3 else 2)
    def kernels(model):
        return (model.get_layer("fc1").get_weights()[0],
                model.get_layer("vgg16").get_layer("block5_conv3").get_weights()[0])
    at_kill = kernels(keras.saving.load_model(os.path.join(killed, CHECKPOINT_DIR, state["checkpoint"])))
    best_head = kernels(models.load_model(killed))[0]  # model.keras: phase 1's best epoch so far
    # What each fit() of the resumed session starts from (the whole model, also when the head is fit).
    starts = []
    begin = RunFolderCheckpoint.on_train_begin

    def record_then_begin(self, logs=None):
        starts.append((self.phase, kernels(self.saved_model or self.model)))
        begin(self, logs)
    monkeypatch.setattr(RunFolderCheckpoint, "on_train_begin", record_then_begin)
    lines = []
    # No cache_dir: a resumed run finds the cache its config.json names.
    assert train.train("vgg16_pretrained", recipes.load_settings(killed), killed, resume=True, log=lines.append)
    resumed = read(killed, rundir.HISTORY_FILE)
    assert resumed["epoch"] == [1, 2, 3, 4] and resumed["phase"] == [1, 1, 2, 2]
    assert resumed["learning_rate"] == pytest.approx(whole["learning_rate"])
    # Epochs before the kill are the uninterrupted run's (same seed, data, weights and cache).
    assert resumed["val_loss"][:kill_after] == pytest.approx(whole["val_loss"][:kill_after], rel=1e-4)
    fine_tuning_began = [line for line in lines if "fine-tuning epochs 3-4" in line]
    assert len(fine_tuning_began) == (1 if kill_after < 3 else 0)  # a resumed phase 2 does not start again
    if kill_after == 1:
        assert any("reused" in line for line in lines)  # the cache the first process built
    config = read(killed, rundir.CONFIG_FILE)
    assert config["status"] == "complete" and len(config["resumed"]) == 1
    assert not os.path.exists(os.path.join(killed, CHECKPOINT_DIR))
    # The session went on from the killed run's weights, in the phase it was in.
    assert [phase for phase, _ in starts] == {1: [1, 2], 2: [2], 3: [2]}[kill_after]
    first_fc1, first_block5 = starts[0][1]
    np.testing.assert_array_equal(first_block5, at_kill[1])
    np.testing.assert_array_equal(first_fc1, best_head if kill_after == 2 else at_kill[0])


def test_bench_times_the_ways_to_train_the_pretrained_model(cifar_dir, tmp_path, monkeypatch):
    """bench.py --transfer on 32x32 inputs and 32 images: its report, not its speed."""
    import bench

    build = models.build_model
    monkeypatch.setattr(bench.models, "build_model", lambda name, **options: build(name, image_size=SIZE, **options))
    out = tmp_path / "bench_transfer.json"
    assert bench.main(["--transfer", "--data-dir", cifar_dir, "--images", "32", "--repeats", "1",
                       "--out", str(out)]) == 0
    report = read(tmp_path, out.name)["transfer"]
    assert report["images"] == 32 and report["cache_images"] == 64
    assert report["cache_bytes"] == 64 * 512 * 2  # 1x1x512 float16 features at 32x32
    assert report["full_split_estimate"]["cache_bytes"] == pytest.approx(95_000 * 512 * 2)
    assert all(report[key] > 0 for key in ("frozen_epoch_seconds", "cache_build_seconds", "head_epoch_seconds",
                                           "fine_tune_epoch_seconds"))

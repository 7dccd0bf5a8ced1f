"""Session fixtures: a synthetic CIFAR-10 in an official layout, and real train.py runs on it.

The evaluate, predict_image, plots and results tests read run folders that `train.train`
itself wrote (once per session, a few seconds each), so a change of train.py's output
breaks the tests that read it. A test that writes into a run works on a copy (`run_copy`).
"""
import dataclasses
import os
import shutil

import pytest

# Under pytest-xdist's -n, a core per worker: TensorFlow would size each worker's op thread pool
# to the whole machine, and the workers' threads would contend for the same cores.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

from cifar_fixtures import make_images, write_binary

# What the session's runs share: a few steps an epoch on 2 CPU cores, and repeatable.
TINY = {"limit": 64, "batch_size": 32, "augmentation": "none", "seed": 0}


# Module fixtures that train or evaluate a run (5-15 s each). Under pytest-xdist's -n, the tests
# that use one go to one worker (pytest.ini's --dist loadgroup), so it is built once, not once a worker.
SHARED_RUNS = {"transfer_run", "killed_transfer_runs", "runs", "evaluated_run", "vgg16_run"}


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the marks
def pytest_collection_modifyitems(items):
    for item in items:
        if SHARED_RUNS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory):
    """A full-size synthetic CIFAR-10 (50,000 + 10,000 images) in the binary layout.

    Full size so that the command-line scripts' check of the official counts passes;
    the binary layout is the quickest to write and read (about a second).
    """
    folder = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-bin"
    write_binary(str(folder), make_images(50_000, seed=1), make_images(10_000, seed=2))
    return str(folder)


@pytest.fixture(scope="session", autouse=True)
def cifar_read_once(cifar_dir):
    """Nothing writes to the session's CIFAR-10 once made, so a worker reads it once: reordering
    60,000 images into Keras' layout costs ~0.4 s a read, and the tests' runs read it ~100 times.
    Each caller gets its own copy, so a test that changes its arrays changes no other test's."""
    import numpy as np

    import data
    load, loaded = data.load_cifar10, {}

    def load_once(data_dir=None, check_counts=True):
        if data_dir != cifar_dir:
            return load(data_dir, check_counts)
        if not loaded:
            loaded["arrays"] = load(data_dir, check_counts)
        (x_train, y_train), (x_test, y_test) = loaded["arrays"]
        return (np.copy(x_train), np.copy(y_train)), (np.copy(x_test), np.copy(y_test))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data, "load_cifar10", load_once)
        yield


@pytest.fixture(scope="session")
def trained_vgg16(cifar_dir, tmp_path_factory):
    """A vgg16 run on the report's schedule (plateau), 3 epochs, whose learning rate is really cut.

    lr_patience 0 and an lr_min_delta that no val_loss can beat make ReduceLROnPlateau
    act on every epoch after the first (the first improves on nothing): the rate is halved
    after epoch 2, so history.json's learning_rate is [5e-4, 5e-4, 2.5e-4].
    """
    import recipes
    import train
    settings = dataclasses.replace(recipes.recipe_settings("paper", "vgg16"), epochs=3, lr_patience=0, lr_min_delta=1e9,
                                   **TINY)
    run_dir = str(tmp_path_factory.mktemp("runs") / "vgg16")
    train.train("vgg16", settings, run_dir, data_dir=cifar_dir, log=lambda line: None)
    return run_dir


@pytest.fixture(scope="session")
def trained_alexnet(cifar_dir, tmp_path_factory):
    """An alexnet run of --recipe short (cosine schedule, per-step learning rate), 3 epochs."""
    import recipes
    import train
    settings = dataclasses.replace(recipes.recipe_settings("short", "alexnet"), epochs=3, **TINY)
    run_dir = str(tmp_path_factory.mktemp("runs") / "alexnet")
    train.train("alexnet", settings, run_dir, data_dir=cifar_dir, log=lambda line: None)
    return run_dir


@pytest.fixture
def run_copy(tmp_path):
    """run_copy(run_dir, name="run"): a private copy of a session run, for a test that writes into it."""
    def copy(run_dir, name="run"):
        return shutil.copytree(run_dir, str(tmp_path / name))
    return copy

"""Run folders made by a real, short training on synthetic data, for the evaluate/predict/plots tests.

`make_run(folder, model_name)` writes exactly what train.py leaves (the run folder
contract in rundir.py): model.keras, stats.json, config.json and history.json. The
model is really trained (one epoch on a few hundred synthetic images) and saved, so
evaluate and predict_image load a genuine run. The history holds that epoch's real
numbers followed by made-up epochs (the curves keep falling, with a learning-rate
drop), so the plots have lines and an LR-reduction marker; the tests never read
meaning into those numbers.

`trained_run(model_name, root)` caches one run per model for the whole test session,
so each test module can import it without training twice; tests that write into a run
folder copy it first (`copy_run`).
"""
import datetime
import os
import platform
import shutil

import numpy as np

from cifar_fixtures import make_images

TRAIN_IMAGES = 256  # one real epoch: enough to get a trained, saved model quickly
VALID_IMAGES = 64
HISTORY_EPOCHS = 3  # epochs in history.json: the real one, then made-up ones
LEARNING_RATE = 5e-4  # the paper's Adam step size (train.Settings), for the made-up history
DROP_EPOCH = 3  # 1-based epoch in history.json whose learning rate is halved (ReduceLROnPlateau-like)
BATCH_SIZE = 64

_CACHE = {}


def make_run(folder, model_name, seed=0):
    """Train `model_name` briefly on synthetic images and write a complete run folder."""
    import keras

    import data
    import models
    import rundir

    os.makedirs(folder, exist_ok=True)
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    images, labels = make_images(TRAIN_IMAGES + VALID_IMAGES, seed=seed)
    x_train, x_valid = images[:TRAIN_IMAGES], images[TRAIN_IMAGES:]
    y_train, y_valid = data.one_hot(labels[:TRAIN_IMAGES]), data.one_hot(labels[TRAIN_IMAGES:])
    stats = data.compute_stats(x_train)

    import train

    keras.utils.set_random_seed(seed)
    model = models.build_model(model_name)
    # train.py's one declaration of the paper's optimizer and loss (Settings' defaults).
    train.compile_model(model, train.Settings(), steps_per_epoch=TRAIN_IMAGES // BATCH_SIZE)
    model.run_eagerly = True  # tracing the train function costs more than the handful of steps here
    logged = model.fit(data.standardize(x_train, stats), y_train, batch_size=BATCH_SIZE, epochs=1,
                       verbose=0).history
    val_loss, val_accuracy = model.evaluate(data.standardize(x_valid, stats), y_valid, verbose=0)
    first = {"loss": logged["loss"][0], "accuracy": logged["accuracy"][0],
             "val_loss": val_loss, "val_accuracy": val_accuracy}
    epochs = range(1, HISTORY_EPOCHS + 1)
    history = {"epoch": list(epochs)}
    for key, value in first.items():  # made-up later epochs: losses shrink, accuracies grow
        history[key] = [float(value * 0.8 ** (e - 1)) if "loss" in key else float(min(1.0, value * 1.2 ** (e - 1)))
                        for e in epochs]
    history["learning_rate"] = [LEARNING_RATE / 2 if e >= DROP_EPOCH else LEARNING_RATE for e in epochs]
    history["epoch_seconds"] = [1.0] * HISTORY_EPOCHS
    rundir.save_model(model, os.path.join(folder, rundir.MODEL_FILE))
    data.save_stats(stats, os.path.join(folder, rundir.STATS_FILE))
    rundir.write_json(os.path.join(folder, rundir.HISTORY_FILE), history)
    rundir.write_json(os.path.join(folder, rundir.CONFIG_FILE), {
        "model": model_name,
        "settings": {"epochs": HISTORY_EPOCHS, "batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE,
                     "seed": seed, "augmentation": "none", "precision": "float32", "limit": TRAIN_IMAGES},
        "data_source": "synthetic (tests/cifar_fixtures.make_images)",
        "device": "CPU",
        "versions": {"tensorflow": "test", "keras": keras.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "parameters": int(model.count_params()),
        "split": {"train": TRAIN_IMAGES, "valid": VALID_IMAGES},
        "started": started,
        "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "train_seconds": float(HISTORY_EPOCHS),
        "epochs_completed": HISTORY_EPOCHS,
        "best_epoch": int(np.argmin(history["val_loss"])) + 1,
        "status": "complete",
    })
    return folder


def trained_run(model_name, root):
    """One run folder per model for the whole session (trained on first use under `root`)."""
    if model_name not in _CACHE:
        _CACHE[model_name] = make_run(os.path.join(str(root), f"run_{model_name}"), model_name)
    return _CACHE[model_name]


def copy_run(run_dir, destination):
    """A private copy of a cached run, for a test that writes into it."""
    shutil.copytree(run_dir, destination)
    return str(destination)

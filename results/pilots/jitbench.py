"""Is XLA (`jit_compile=True`) a speed lever for vgg16 on a CPU? (issue 14, item 3)

Usage: python results/pilots/jitbench.py [mixed|float32]

Trains vgg16 (the builder's defaults) with `--recipe long`'s optimizer and schedule at its
batch of 128 on 3,840 random standardized images (clean tensors: no augmentation, so only
the network's passes are timed), alternating a model compiled with jit_compile=False (what
Keras' "auto", train.py's, resolves to on a CPU) and the same compiled with
jit_compile=True. Each
model: one untimed epoch (tracing, compilation), then 3 timed epochs, printed as images/s
and the cores the process kept busy (CPU seconds over wall seconds). Two rounds.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import models  # noqa: E402
import recipes  # noqa: E402

BATCH = 128  # --recipe long's
STEPS = 30
IMAGES = BATCH * STEPS


def timed_epochs(dataset, jit, precision, repeats=3):
    """[(images/s, cores)] for `repeats` epochs of a fresh vgg16 after one untimed epoch."""
    keras.backend.clear_session()
    models.set_precision(precision)
    try:
        model = models.build_model("vgg16", weights=None)
        recipes.compile_model(model, recipes.recipe_settings("long"), STEPS)
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"], jit_compile=jit)
        model.fit(dataset, epochs=1, verbose=0)
        out = []
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            model.fit(dataset, epochs=1, verbose=0)
            wall = time.perf_counter() - wall
            out.append((IMAGES / wall, (time.process_time() - cpu) / wall))
        return out
    finally:
        models.set_precision("float32")


def main():
    precision = sys.argv[1] if len(sys.argv) > 1 else "mixed"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(IMAGES, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 10, IMAGES), 10)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).prefetch(2)
    for _ in range(2):
        for jit in (False, True):
            runs = timed_epochs(dataset, jit, precision)
            print(f"jit={jit} img/s", [f"{a:.0f}" for a, _ in runs],
                  "cores", [f"{b:.2f}" for _, b in runs], flush=True)


if __name__ == "__main__":
    main()

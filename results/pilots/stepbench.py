"""Why is vgg16's batch-128 epoch slow on the AVX-512 BF16 EPYC? (issue 14, item 3)

Usage: python results/pilots/stepbench.py [mixed|float32] [--rounds 2]

On 2 cores of an AMD EPYC with AVX-512 BF16, bfloat16, the records' epochs took a median
39-62 s at batch 256 (`nesterov`, 2026-12-02; 39-40 s in the four fastest records) and 75-79 s
at batch 128 (`long`, 2026-12-04), but on different days. This times, in one sitting, vgg16
compiled as train.py compiles `--recipe long` (bench._compiled_model: its optimizer,
schedule and loss) under each configuration below, each in its own process (TensorFlow
fixes its thread pools when it starts), the configurations alternating `--rounds` times. Each: one untimed epoch, then 3
timed epochs of 7,680 random images (30 steps of 256, 60 of 128), printed as images/s and
the cores the process kept busy (CPU seconds over wall seconds).

Configurations: the batch (128: long's; 256: nesterov's); the input (clean standardized
tensors, or `long`'s own pipeline, augment.make_dataset with pad-and-crop, flip and Cutout
12); TensorFlow's thread pools (default: one thread per core in each; inter-op 1: one op
at a time, each op on both cores; intra-op 1: ops single-threaded, two at a time).
"""
import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGES = 7680  # 30 steps of 256, 60 of 128
CONFIGS = {  # name: (batch, input, inter-op threads, intra-op threads); 0 = TensorFlow's default
    "b128 clean": (128, "clean", 0, 0),
    "b256 clean": (256, "clean", 0, 0),
    "b128 long-aug": (128, "aug", 0, 0),
    "b256 long-aug": (256, "aug", 0, 0),
    "b128 clean inter-op 1": (128, "clean", 1, 0),
    "b128 clean intra-op 1": (128, "clean", 0, 1),
}


def measure(precision, batch, source, inter, intra, repeats=3):
    """[(images/s, cores)] for `repeats` timed epochs, in this process."""
    import tensorflow as tf
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    sys.path.insert(0, str(REPO))
    import keras
    import numpy as np
    import augment
    import bench
    import models
    import recipes
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(IMAGES, 32, 32, 3), dtype=np.uint8)
    labels = keras.utils.to_categorical(rng.integers(0, 10, IMAGES), 10)
    stats = {"mean": float(images.mean()), "std": float(images.std())}
    long = recipes.recipe_settings("long")
    augmentation = (long.augmentation, long.cutout) if source == "aug" else (None, 0)
    dataset = augment.make_dataset(images, labels, stats, batch, augment=augmentation[0], shuffle=True,
                                   seed=0, cutout=augmentation[1],
                                   crop_padding=long.crop_padding if source == "aug" else augment.CROP_PADDING)
    models.set_precision(precision)
    model = bench._compiled_model("vgg16", "long", steps_per_epoch=math.ceil(IMAGES / batch))
    model.fit(dataset, epochs=1, verbose=0)
    out = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        model.fit(dataset, epochs=1, verbose=0)
        wall = time.perf_counter() - wall
        out.append((IMAGES / wall, (time.process_time() - cpu) / wall))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("precision", nargs="?", default="mixed", choices=("mixed", "float32"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.precision, *CONFIGS[args.child])))
        return
    for _ in range(args.rounds):
        for name in CONFIGS:
            result = subprocess.run([sys.executable, __file__, args.precision, "--child", name],
                                    capture_output=True, text=True, check=True)
            runs = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"{name:22s} img/s", [f"{a:.0f}" for a, _ in runs], "cores", [f"{b:.2f}" for _, b in runs],
                  flush=True)


if __name__ == "__main__":
    main()

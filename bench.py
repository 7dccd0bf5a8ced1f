"""Training and prediction throughput, against TensorFlow's own matmul peaks.

    python bench.py --data-dir /data/cifar10 --models vgg16 --pipelines short,short-noaug --no-predict
    python bench.py --models vgg16 --images 2560 --repeats 3 --out bench.json

For each model, on the same real images, it times training images/s under
(a) the paper's pipeline exactly: data.paper_generator().flow(...) + model.fit, float32;
(b) the same augmentation as a tf.data map (augment.make_dataset), float32 and mixed
precision; then each recipe of PIPELINES as it trains (its batch, crop, flip, Cutout,
optimizer and, where it says auto, the precision train.py picks on this machine) and on
clean tensors, for the pipeline's share; then prediction images/s over
the test set. Each training row gives its share of the bfloat16 matmul peak measured in
the same process (images/s x training_gflop / peak), its share of the float32 one (the
yardstick on a CPU that only emulates bfloat16) and the cores the process kept busy
(a shared host may leave it less than all of them). Each measurement is a fresh model
trained for one warm-up epoch (graph tracing, oneDNN kernel selection; not counted) and
`--repeats` timed epochs of `--images` images; the JSON file keeps every run, the device
and the versions (airbench's way: warm-up excluded, hardware named).
"""
import argparse
import dataclasses
import math
import os
import platform
import statistics
import sys
import time

import rundir  # first: it sets TensorFlow's C++ log level before TensorFlow loads

import keras
import numpy as np

import augment
import data
import models
import recipes

BATCH_SIZE = recipes.Settings().batch_size  # training images a step: the paper's 64, from recipes.py's declaration
DEFAULT_MODELS = ("vgg16", "alexnet")  # vgg16_pretrained (224x224 inputs) takes minutes an epoch on a CPU
DEFAULT_IMAGES = 2560  # training images a timed epoch: 40 of the paper's batches
DEFAULT_REPEATS = 3  # timed epochs (and prediction passes) a measurement, after one warm-up
PREDICT_BATCH_SIZE = 512  # images a prediction step: larger batches amortize per-step overhead
STEPS_PER_EXECUTION = 1  # train steps a graph call; 8 measured no faster here (a step is 0.2-1 s of compute)
# Without AVX-512 BF16 or AMX, TensorFlow's CPU kernels emulate bfloat16 and mixed precision
# runs about 10x slower than float32; on such CPUs the mixed measurements use only this
# many images (5 batches) so the bench still ends in minutes. Rates stay comparable.
SLOW_MIXED_IMAGES = 320
DEFAULT_OUT = "bench.json"

PIPELINES = (  # (name, precision, batch size or None for the recipe's own), in the order measured
    ("paper", "float32", BATCH_SIZE),  # the report's ImageDataGenerator and Adam: the baseline
    ("fast", "float32", BATCH_SIZE),  # the same augmentation as a parallel tf.data map
    ("fast", "mixed", BATCH_SIZE),
    # Each recipe as it trains (its batch, crop, flip and Cutout, its optimizer, and "recipe":
    # the precision it resolves to on this machine), then the same on clean tensors with no
    # augmentation map: the difference is the input pipeline's share.
    ("short", "recipe", None),
    ("short-noaug", "recipe", None),
    ("long", "float32", None),
    ("long", "recipe", None),  # left out where that is float32: the row above
    ("long-noaug", "recipe", None),
)
# The recipe whose optimizer (and, but for "fast" and the "-noaug" rows, input pipeline) each
# tf.data measurement uses; "fast" is the report's own augmentation in tf.data, under its Adam.
RECIPE_OF_PIPELINE = {"fast": "paper", "short": "short", "short-noaug": "short", "long": "long",
                      "long-noaug": "long"}
PEAK_SIZE = 2048  # the yardstick: tf.linalg.matmul of two PEAK_SIZE x PEAK_SIZE tensors
PEAK_REPEATS = 20  # timed products, after 5 untimed
PIPELINE_NAMES = tuple(dict.fromkeys(name for name, _, _ in PIPELINES))
RECIPES_WITH_LAYERS = ("short", "long")  # the rows --policy, --erasing and --mixing add their layers to
PREDICT_PRECISIONS = ("float32", "mixed")


def _steal_seconds():
    """CPU seconds the hypervisor gave other guests (Linux's steal time), summed over the cores; None elsewhere."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class _EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of every epoch, as model.fit runs it, with the CPU seconds it used and lost."""

    def __init__(self):
        super().__init__()
        self.seconds = []
        self.cpu_seconds = []  # of every thread of the process: cores used = cpu_seconds / seconds
        self.steal_seconds = []  # taken by the hypervisor from this machine's cores: a busy host

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()
        self._steal_start = _steal_seconds()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        self.cpu_seconds.append(time.process_time() - self._cpu_start)
        steal = _steal_seconds()
        self.steal_seconds.append(None if steal is None or self._steal_start is None else steal - self._steal_start)


def matmul_peak(size=None, repeats=None, dtype="bfloat16"):
    """TensorFlow's `dtype` matmul rate on this machine, now: median GFLOP/s of `repeats` products."""
    import tensorflow as tf
    size, repeats = size or PEAK_SIZE, repeats or PEAK_REPEATS
    a, b = (tf.random.normal([size, size], dtype=dtype, seed=seed) for seed in (1, 2))
    for _ in range(5):
        tf.linalg.matmul(a, b).numpy()  # warm-up: thread pools and oneDNN's kernel choice
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def training_gflop(model):
    """GFLOP of one training image: 3x the forward multiply-adds of the convolutions and dense
    layers (the backward pass computes two products per forward one), 2 FLOP each."""
    flop = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel_h, kernel_w, channels_in, channels_out = layer.kernel.shape
            _, height, width, _ = layer.output.shape
            flop += 2 * height * width * kernel_h * kernel_w * channels_in * channels_out
        elif isinstance(layer, keras.layers.Dense):
            flop += 2 * math.prod(layer.kernel.shape)
    return 3 * flop / 1e9


def _compiled_model(name, recipe="paper", steps_per_execution=1, steps_per_epoch=1):
    """A fresh model compiled as train.py compiles `recipe` (its optimizer, schedule and loss)."""
    model = models.build_model(name, weights=None)
    settings = dataclasses.replace(recipes.recipe_settings(recipe, name), steps_per_execution=steps_per_execution)
    recipes.compile_model(model, settings, steps_per_epoch)
    return model


def measure_training(name, pipeline, precision, x_train, y_train, stats, repeats=DEFAULT_REPEATS,
                     batch_size=BATCH_SIZE, seed=0, steps_per_execution=STEPS_PER_EXECUTION, layers=None):
    """Training images/s of a fresh `name` model, one value per timed epoch, and the cores it used.

    Args:
        name: a models.MODELS key.
        pipeline: "paper" (ImageDataGenerator.flow + model.fit, as the report ran it),
            "fast" (augment.make_dataset, the same transforms), "short" or "long" (that
            recipe's crop, flip and Cutout and its optimizer), or "short-noaug" or
            "long-noaug" (the same optimizer on clean standardized images: no
            augmentation in the pipeline).
        precision: "float32" or "mixed"; the global policy is set for this
            measurement only and put back to float32 afterwards.
        x_train, y_train: uint8 images (N, 32, 32, 3) and one-hot labels; every epoch
            is one pass over them.
        stats: data.compute_stats of the training split.
        repeats: timed epochs, after one untimed warm-up epoch.
        layers: settings that add Keras' augmentation layers to a recipe's own pipeline
            ({"policy": "randaugment"}, {"erasing": 0.5}, {"mixing": "mixup"}).

    Returns:
        (a list of `repeats` images/s figures, the cores the process kept busy over the
        timed epochs: CPU seconds of all its threads over wall seconds, and per timed epoch
        {"cores": the same, "steal_cores": the cores the hypervisor took from the machine}).
    """
    keras.backend.clear_session()
    models.set_precision(precision, on_gpu=_on_gpu())
    try:
        if pipeline == "paper":
            model = _compiled_model(name)
            inputs = data.paper_generator().flow(data.standardize(x_train, stats), y_train,
                                                 batch_size=batch_size, seed=seed)
        elif pipeline in RECIPE_OF_PIPELINE:
            recipe = RECIPE_OF_PIPELINE[pipeline]
            with_layers = layers if pipeline in RECIPES_WITH_LAYERS else None
            model = _compiled_model(name, recipe, steps_per_execution, math.ceil(len(x_train) / batch_size))
            settings = dataclasses.replace(recipes.recipe_settings(recipe, name), **(with_layers or {}))
            options = {}
            if pipeline == "fast":
                augmentation = "paper"
            elif pipeline.endswith("-noaug"):
                augmentation = None
            else:
                augmentation, options = settings.augmentation, recipes.pipeline_options(settings)
            inputs = augment.make_dataset(x_train, y_train, stats, batch_size, augment=augmentation,
                                          shuffle=True, seed=seed, **options)
        else:
            raise ValueError(f"unknown pipeline '{pipeline}'; choose one of {', '.join(PIPELINE_NAMES)}")
        timer = _EpochTimer()
        # The dataset shuffles itself (and the paper's flow() does too): fit must not try.
        model.fit(inputs, epochs=1 + repeats, callbacks=[timer], verbose=0, shuffle=False)
    finally:
        models.set_precision("float32")
    cores = sum(timer.cpu_seconds[1:]) / sum(timer.seconds[1:])
    per_epoch = {"cores": [cpu / wall for cpu, wall in zip(timer.cpu_seconds[1:], timer.seconds[1:])],
                 "steal_cores": [None if steal is None else steal / wall
                                 for steal, wall in zip(timer.steal_seconds[1:], timer.seconds[1:])]}
    return [len(x_train) / seconds for seconds in timer.seconds[1:]], cores, per_epoch


def measure_prediction(name, precision, x_test, stats, repeats=DEFAULT_REPEATS,
                       batch_size=PREDICT_BATCH_SIZE):
    """Prediction images/s of a fresh `name` model over `x_test`, one value a timed pass.

    Times `model.predict` on the standardized test images, as evaluate.py does (its
    predict_seconds); an untimed warm-up on two batches first traces both batch shapes.
    """
    keras.backend.clear_session()
    models.set_precision(precision, on_gpu=_on_gpu())
    try:
        model = models.build_model(name, weights=None)
        x_test = data.standardize(x_test, stats)
        model.predict(x_test[:batch_size + 1], batch_size=batch_size, verbose=0)  # warm-up
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.predict(x_test, batch_size=batch_size, verbose=0)
            rates.append(len(x_test) / (time.perf_counter() - start))
    finally:
        models.set_precision("float32")
    return rates


def _on_gpu():
    import tensorflow as tf
    return bool(tf.config.list_physical_devices("GPU"))


TRANSFER_IMAGES = 640  # the subset vgg16_pretrained's ways of training are timed on
FULL_SPLIT = {"train": 45_000, "valid": 5_000}  # the paper's split, for the extrapolated figures


def measure_transfer(x_train, y_train, stats, repeats=DEFAULT_REPEATS, cache_dir=None, log=print):
    """Seconds of vgg16_pretrained's ways to train on the same images, at 224x224, float32.

    (a) a frozen-base epoch the report's way (every step through the base, the paper's
    ImageDataGenerator, Adam 5e-4); (b) building --recipe transfer's feature cache of the
    images and their mirrors, once; (c) a head epoch from that cache; (d) a fine-tuning
    epoch (block5 unfrozen, crop augmentation). Random base weights: the speed does not
    depend on their values. Epochs (a), (c), (d): one untimed warm-up, then `repeats`
    timed; (b) after one untimed batch (tracing). Returns a JSON-ready dict with the
    figures extrapolated to the full 45,000/5,000 split.
    """
    import tempfile

    import features

    count, batch_size = len(x_train), BATCH_SIZE
    steps = math.ceil(count / batch_size)
    transfer = recipes.recipe_settings("transfer", "vgg16_pretrained")
    pixels = dict(stats, input=data.PIXEL_INPUT)

    def timed_fit(model, inputs):
        timer = _EpochTimer()
        model.fit(inputs, epochs=1 + repeats, callbacks=[timer], verbose=0, shuffle=False)
        return statistics.median(timer.seconds[1:])

    keras.backend.clear_session()
    report = _compiled_model("vgg16_pretrained")
    frozen = timed_fit(report, data.paper_generator().flow(data.standardize(x_train, stats), y_train,
                                                           batch_size=batch_size, seed=0))
    log(f"(a) frozen base, the report's way: {frozen:.1f} s an epoch of {count} images")
    del report
    keras.backend.clear_session()
    model = models.build_model("vgg16_pretrained", weights=None, preprocessing="imagenet")
    extractor = models.feature_extractor(model)
    extractor.predict_on_batch(x_train[:batch_size].astype("float32"))  # tracing, not counted
    with tempfile.TemporaryDirectory(dir=cache_dir) as folder:
        start = time.perf_counter()
        cache, _, _ = features.load_or_build(extractor, {"train": x_train, "train_mirror": x_train[:, :, ::-1]},
                                             lambda images: data.standardize(images, pixels), folder,
                                             batch_size, log=lambda line: None)
        build = time.perf_counter() - start
        cache_bytes = sum(part.nbytes for part in cache.values())
        log(f"(b) feature cache: {build:.1f} s for {2 * count} images (and mirrors), {cache_bytes / 1e6:.1f} MB")
        recipes.compile_model(model, transfer, steps)
        head = models.head_model(model)
        head.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"])
        head_epoch = timed_fit(head, features.CachedFeatures(cache["train"], y_train, batch_size,
                                                              mirrors=cache["train_mirror"], shuffle=True))
        del cache
    log(f"(c) head from the cache: {head_epoch:.2f} s an epoch, {frozen / head_epoch:.0f}x faster than (a)")
    models.unfreeze(model, recipes.fine_tune_blocks(transfer))
    recipes.compile_model(model, recipes.fine_tune_settings(transfer), steps)
    fine_tune = timed_fit(model, augment.make_dataset(x_train, y_train, pixels, batch_size, augment="crop",
                                                      shuffle=True, seed=0))
    log(f"(d) fine-tuning block5: {fine_tune:.1f} s an epoch")
    per_image_forward = build / (2 * count)
    full_train, full_valid = FULL_SPLIT["train"], FULL_SPLIT["valid"]
    return {
        "images": count, "batch_size": batch_size, "image_size": models.PRETRAINED_IMAGE_SIZE,
        "frozen_epoch_seconds": frozen, "cache_build_seconds": build, "cache_images": 2 * count,
        "cache_bytes": cache_bytes, "head_epoch_seconds": head_epoch, "fine_tune_epoch_seconds": fine_tune,
        "head_speedup": frozen / head_epoch,
        # Full split: training epochs scale with images; validation adds a forward pass of the
        # 5,000 images through the base each epoch, except from the cache (computed once).
        "full_split_estimate": {
            "frozen_epoch_seconds": frozen / count * full_train + per_image_forward * full_valid,
            "cache_build_seconds": per_image_forward * (2 * full_train + full_valid),
            "cache_bytes": cache_bytes / (2 * count) * (2 * full_train + full_valid),
            "head_epoch_seconds": head_epoch / count * full_train,
            "fine_tune_epoch_seconds": fine_tune / count * full_train + per_image_forward * full_valid,
        },
    }


def measurements(name, pipelines=PIPELINE_NAMES):
    """(pipeline, precision, batch size) of each of model `name`'s training measurements, in
    PIPELINES' order: a "recipe" precision as train.py resolves the recipe's on this machine,
    a repeated measurement left out."""
    rows = []
    for pipeline, precision, own in PIPELINES:
        recipe = RECIPE_OF_PIPELINE.get(pipeline, "paper")
        if pipeline not in pipelines or name not in recipes.RECIPES[recipe]:
            continue
        settings = recipes.recipe_settings(recipe, name)
        if precision == "recipe":
            precision = recipes.resolve_settings(name, settings).precision
        if (pipeline, precision) not in [(done, done_precision) for done, done_precision, _ in rows]:
            rows.append((pipeline, precision, own or settings.batch_size))
    return rows


def run_bench(model_names, x_train, y_train, x_test, stats, repeats=DEFAULT_REPEATS, log=print,
              pipelines=PIPELINE_NAMES, predict=True, steps_per_execution=STEPS_PER_EXECUTION, batch_size=None,
              layers=None):
    """Every measurement for every model (training: the PIPELINES named in `pipelines`, the
    recipes' own with `layers` added); returns the report as a JSON-ready dict."""
    cpu, bf16 = rundir.cpu_description()
    # Mixed precision on a CPU that only emulates bfloat16 is timed on fewer images.
    slow_mixed = not bf16 and not _on_gpu()

    def images_for(precision, count):
        return min(count, SLOW_MIXED_IMAGES) if precision == "mixed" and slow_mixed else count
    peak, peak_float32 = matmul_peak(), matmul_peak(dtype="float32")
    log(f"matmul peak ({PEAK_SIZE}x{PEAK_SIZE}, median): bfloat16 {peak:.0f} GFLOP/s, float32 {peak_float32:.0f}")
    report = {
        "device": rundir.device_description(), "cpu": cpu, "cpu_bf16": bf16, "matmul_peak_gflops": peak,
        "matmul_peak_gflops_float32": peak_float32,
        "settings": {"models": list(model_names), "pipelines": list(pipelines), "predict": predict,
                     "train_images": len(x_train), "test_images": len(x_test),
                     "repeats": repeats, "predict_batch_size": PREDICT_BATCH_SIZE,
                     "steps_per_execution": steps_per_execution, "batch_size": batch_size,
                     "layers": layers or {}, "threads": _threads()},
        "versions": _versions(), "training": [], "prediction": [],
    }
    for name in model_names:
        baseline = None
        gflop = training_gflop(models.build_model(name, weights=None))
        for pipeline, precision, own in measurements(name, pipelines):
            size = batch_size or own
            count = images_for(precision, len(x_train))
            rates, cores, per_epoch = measure_training(name, pipeline, precision, x_train[:count], y_train[:count],
                                                       stats, repeats, batch_size=size,
                                                       steps_per_execution=steps_per_execution, layers=layers)
            median = statistics.median(rates)
            baseline = baseline or median  # the first measured: the paper's pipeline when it is measured
            size = min(size, count)  # the batch it trained with: fewer images make one smaller
            share, share_float32 = median * gflop / peak, median * gflop / peak_float32
            report["training"].append({"model": name, "pipeline": pipeline, "precision": precision,
                                       "batch_size": size, "images_per_second": median,
                                       "ratio_to_first": median / baseline, "cores_used": cores,
                                       "gflop_per_image": gflop, "share_of_peak": share,
                                       "share_of_float32_peak": share_float32,
                                       "images": count, "runs": rates, **per_epoch})
            log(f"{name:<17} train    {pipeline:<12} {precision:<8} batch {size:<4} {median:6.0f} images/s  "
                f"{median / baseline:5.2f}x the first row, {100 * share:3.0f} % of the peak "
                f"({100 * share_float32:3.0f} % of float32's), {cores:.2f} cores "
                f"(runs: {', '.join(f'{rate:.0f} at {busy:.2f}' for rate, busy in zip(rates, per_epoch['cores']))})"
                + (f"  ({count} images)" if count < len(x_train) else ""))
        for precision in PREDICT_PRECISIONS if predict else ():
            count = images_for(precision, len(x_test))
            rates = measure_prediction(name, precision, x_test[:count], stats, repeats)
            median = statistics.median(rates)
            seconds = len(x_test) / median  # for the whole test set, at the measured rate
            report["prediction"].append({"model": name, "precision": precision, "images_per_second": median,
                                         "seconds_for_test_set": seconds, "images": count, "runs": rates})
            log(f"{name:<17} predict         {precision:<8} {median:8.0f} images/s  "
                f"{seconds:6.2f} s for {len(x_test):,} test images" + (f"  (timed on {count})" if count < len(x_test) else ""))
    report["slow_mixed"] = slow_mixed
    # The host's pace can change during a bench.
    report["matmul_peak_gflops_after"] = matmul_peak()
    report["matmul_peak_gflops_float32_after"] = matmul_peak(dtype="float32")
    return report


def _threads():
    """TensorFlow's inter- and intra-op thread pools as set in this process; 0: its default, one per core."""
    import tensorflow as tf
    return {"inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads()}


def _versions():
    import tensorflow as tf
    return {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def load_bench_data(data_dir, images, test_images):
    """The first `images` of the paper's training split, its statistics, and the test images."""
    (x_train, y_train), (x_test, _) = data.load_cifar10(data_dir)
    x_train, _, y_train, _ = data.split_validation(x_train, y_train)
    stats = data.compute_stats(x_train)  # the whole split's, as training uses
    if images > len(x_train):
        raise rundir.UserError(f"--images {images} is more than the {len(x_train):,} training images")
    return x_train[:images], data.one_hot(y_train[:images]), x_test[:test_images], stats


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {value}")
    return value


def _log(line):
    print(line, flush=True)


@rundir.one_line_errors("bench.py")
def main(argv=None):
    parser = rundir.ArgumentParser(
        prog="bench.py", description="Time training (the paper's ImageDataGenerator, the tf.data "
        "pipelines, each recipe as it trains and without augmentation; float32 and mixed precision) against "
        "TensorFlow's bfloat16 and float32 matmul peaks measured in the same process, and test-set prediction, "
        "for each model.")
    data.add_data_dir_argument(parser)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated, from {', '.join(models.MODELS)} (default: %(default)s)")
    parser.add_argument("--images", type=_positive,
                        help=f"training images a timed epoch (default: {DEFAULT_IMAGES}; {TRANSFER_IMAGES} with "
                        "--transfer)")
    parser.add_argument("--test-images", type=_positive, default=data.OFFICIAL_COUNTS["test"],
                        help="test images to predict (default: all %(default)s)")
    parser.add_argument("--repeats", type=_positive, default=DEFAULT_REPEATS,
                        help="timed repeats a measurement, after one warm-up (default: %(default)s)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="JSON report to write (default: %(default)s)")
    parser.add_argument("--pipelines", default=",".join(PIPELINE_NAMES),
                        help="training measurements to make, comma-separated (default: all, %(default)s); "
                        "the -noaug ones are those recipes with no augmentation, for the pipeline's share")
    parser.add_argument("--steps-per-execution", type=_positive, default=STEPS_PER_EXECUTION,
                        help="training steps a compiled call (default: %(default)s)")
    parser.add_argument("--batch-size", type=_positive, help="train every row at this batch size (default: "
                        "the paper's 64 for paper and fast, each recipe's own for its rows)")
    parser.add_argument("--policy", choices=augment.POLICIES, help="add this augmentation policy to the "
                        "recipes' own rows (short, long), as train.py's --policy does")
    parser.add_argument("--erasing", type=float, help="add keras.layers.RandomErasing with this probability to "
                        "the recipes' own rows, as train.py's --erasing does")
    parser.add_argument("--mixing", choices=augment.MIXINGS, help="add this batch-mixing layer to the recipes' "
                        "own rows, as train.py's --mixing does")
    parser.add_argument("--no-predict", action="store_true", help="time training only, not prediction")
    parser.add_argument("--transfer", action="store_true", help="instead, time vgg16_pretrained's ways to "
                        "train on --images images (default here 640): a frozen-base epoch the report's way, "
                        "building --recipe transfer's feature cache, a head epoch from it, a fine-tuning epoch; "
                        "each also extrapolated to the full 45,000/5,000 split")
    args = parser.parse_args(argv)
    if args.transfer:
        return _main_transfer(args)
    pipelines = [name.strip() for name in args.pipelines.split(",") if name.strip()]
    unknown = [name for name in pipelines if name not in PIPELINE_NAMES]
    if unknown or not pipelines:
        raise rundir.UserError(f"unknown pipeline '{unknown[0] if unknown else args.pipelines}'; "
                               f"choose from {', '.join(PIPELINE_NAMES)}")
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in names if name not in models.MODELS]
    if unknown or not names:
        raise rundir.UserError(f"unknown model '{unknown[0] if unknown else args.models}'; "
                               f"choose from {', '.join(models.MODELS)}")
    layers = {key: value for key, value in (("policy", args.policy), ("erasing", args.erasing),
                                            ("mixing", args.mixing)) if value is not None}
    if layers:
        recipes.check_settings("vgg16", dataclasses.replace(recipes.recipe_settings("short", "vgg16"), **layers))
    x_train, y_train, x_test, stats = load_bench_data(args.data_dir, args.images or DEFAULT_IMAGES,
                                                      args.test_images)
    cpu, bf16 = rundir.cpu_description()
    print(f"device: {rundir.device_description()}; {cpu}; AVX-512/AMX BF16: { {True: 'yes', False: 'no'}.get(bf16, 'unknown') }", flush=True)
    print(f"data: {data.describe_source(args.data_dir)}; {len(x_train):,} training images an epoch, "
          f"{args.repeats} timed repeats after one warm-up; medians", flush=True)
    start = time.perf_counter()
    report = run_bench(names, x_train, y_train, x_test, stats, args.repeats, log=_log, pipelines=pipelines,
                       predict=not args.no_predict, steps_per_execution=args.steps_per_execution,
                       batch_size=args.batch_size, layers=layers)
    report["data_source"] = os.path.basename(data.describe_source(args.data_dir))  # a name, not this machine's path
    report["seconds"] = time.perf_counter() - start
    rundir.write_json(args.out, report)
    print(f"wrote {args.out} ({report['seconds'] / 60:.1f} min)")
    return 0


def _main_transfer(args):
    images = args.images or TRANSFER_IMAGES
    x_train, y_train, _, stats = load_bench_data(args.data_dir, images, 1)
    cpu, bf16 = rundir.cpu_description()
    print(f"device: {rundir.device_description()}; {cpu}; AVX-512/AMX BF16: "
          f"{ {True: 'yes', False: 'no'}.get(bf16, 'unknown') }", flush=True)
    start = time.perf_counter()
    report = {"device": rundir.device_description(), "cpu": cpu, "cpu_bf16": bf16, "versions": _versions(),
              "data_source": os.path.basename(data.describe_source(args.data_dir)), "repeats": args.repeats,
              "transfer": measure_transfer(x_train, y_train, stats, args.repeats, log=_log)}
    report["seconds"] = time.perf_counter() - start
    estimate = report["transfer"]["full_split_estimate"]
    print("full 45,000/5,000 split at this pace: " + ", ".join(
        f"{key.replace('_seconds', '')} {estimate[key] / 60:.1f} min" for key in estimate if key.endswith("seconds"))
        + f", cache {estimate['cache_bytes'] / 1e9:.1f} GB", flush=True)
    rundir.write_json(args.out, report)
    print(f"wrote {args.out} ({report['seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

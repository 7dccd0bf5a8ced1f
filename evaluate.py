"""Evaluate run folders on the CIFAR-10 test set: the paper's Table 2, and metrics.json.

    python evaluate.py runs/vgg16 runs/alexnet --data-dir /data/cifar10
    python evaluate.py runs/vgg16_fast --tta     # also: each image and its mirror, averaged
    python evaluate.py runs/vgg16_fast --tta flip-translate   # and both moved by 1 px (6 views)

Each run is evaluated on the 10,000 test images standardized with that run's own
stats.json (never statistics of the test set). The model predicts the test set once,
after an untimed warm-up; accuracy, loss (categorical cross-entropy), top-5 accuracy,
per-class accuracy and the confusion matrix are all computed from those predictions,
and written with the timing to `metrics.json` in the run folder (Gomez Cruz 2025,
section 4, Table 2); for a record kept by results.py collect --with-model, to
runs/evaluated/NAME/metrics.json instead, the record left as collected. With --tta,
more passes predict other views of every image (its mirror; with flip-translate also 1-pixel moves, the augmentations the fast recipes
trained on) and the probability vectors are averaged with TTA_MODES' weights;
`test_accuracy_tta`, `test_loss_tta`, `tta_mode` and `tta_views` join the plain figures.
"""
import datetime
import os
import sys
import time

import numpy as np

import data
import rundir
from rundir import UserError

# Images per predict batch. The paper trained with batch_size=64 (section 3) and gives
# no evaluation batch size; 64 keeps memory small on any machine. Timings depend on it,
# so it is recorded in metrics.json.
DEFAULT_BATCH_SIZE = 64
TOP_K = 5  # top-5 accuracy, the usual second number for CIFAR/ImageNet classifiers

# The paper's Table 2 (seconds to predict the test set on a MacBook Air M3 GPU, and
# accuracy in %), keyed by our model names.
PAPER_TABLE2 = {
    "vgg16": ("Scratch VGG16", 4, 90),
    "alexnet": ("Scratch AlexNet", 3, 74),
    "vgg16_pretrained": ("Pretrained VGG16", 100, 77),
}


def load_test_set(data_dir=None, limit=None):
    """The CIFAR-10 test split: (uint8 images (N,32,32,3), int64 labels (N,)).

    `limit` keeps the first `limit` images (a quick smoke run; the count is recorded).
    """
    _, (x_test, y_test) = data.load_cifar10(data_dir)
    y_test = np.asarray(y_test).reshape(-1).astype(np.int64)
    if limit is not None:
        x_test, y_test = x_test[:limit], y_test[:limit]
    return x_test, y_test


def compute_metrics(probabilities, labels):
    """Every quality metric from one (N, 10) array of softmax outputs and true labels (N,).

    Returns a dict with test_accuracy, test_loss, top5_accuracy, per_class_accuracy
    (class name -> accuracy, None for a class absent from `labels`), confusion_matrix
    (10x10 counts, rows = true class, columns = predicted class) and test_images.
    """
    import keras
    from sklearn.metrics import confusion_matrix, top_k_accuracy_score
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if probabilities.shape != (len(labels), data.NUM_CLASSES):
        raise ValueError(f"expected probabilities of shape ({len(labels)}, {data.NUM_CLASSES}), "
                         f"received {probabilities.shape}")
    classes = list(range(data.NUM_CLASSES))  # all ten, even when `labels` lacks some
    predicted = probabilities.argmax(axis=1)
    # Keras' own loss, not scikit-learn's log_loss: Keras clips probabilities at 1e-7 and
    # log_loss at float64's 2e-16, so only Keras' gives the number model.evaluate and the
    # run's val_loss report for the same predictions (they differ on confident mistakes).
    loss = keras.losses.categorical_crossentropy(data.one_hot(labels), probabilities)
    matrix = confusion_matrix(labels, predicted, labels=classes)
    per_class = {}
    for index, name in enumerate(data.CLASS_NAMES):
        count = int(matrix[index].sum())
        per_class[name] = float(matrix[index, index] / count) if count else None
    return {
        "test_accuracy": float(np.mean(predicted == labels)),
        "test_loss": float(np.mean(keras.ops.convert_to_numpy(loss))),
        # A tie across the fifth place (equal float32 outputs, e.g. several underflowed
        # to 0) goes to the higher class index in scikit-learn; any rule is arbitrary.
        "top5_accuracy": top_k_accuracy_score(labels, probabilities, k=TOP_K, labels=classes),
        "per_class_accuracy": per_class,
        "confusion_matrix": matrix.astype(int).tolist(),
        "test_images": int(len(labels)),
    }


def mirrored(images):
    """The images flipped left to right (N, H, W, C): the view test-time augmentation adds."""
    return np.asarray(images)[:, :, ::-1, :]


def translated(images, rows, cols):
    """The images moved by (rows, cols) whole pixels (|shift| <= 1), edges filled as in training.

    The fill mirrors the edge pixel (numpy's "symmetric"), as the crop augmentation's
    "reflect" fill does (augment.crop_batch), so a view shows what training showed.
    """
    images = np.asarray(images)
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="symmetric")
    height, width = images.shape[1:3]
    return padded[:, 1 - rows:1 - rows + height, 1 - cols:1 - cols + width, :]


# Test-time augmentation: mode -> ((weight, row shift, column shift, mirrored), ...). The
# weights sum to 1. flip-translate is airbench94's level 2 (Jordan 2024): half the weight
# on the image and its mirror, a quarter each on both moved one pixel down-right and
# one pixel up-left (with their mirrors), about one training epoch in ten's worth.
TTA_MODES = {
    "flip": ((0.5, 0, 0, False), (0.5, 0, 0, True)),
    "flip-translate": ((0.25, 0, 0, False), (0.25, 0, 0, True),
                       (0.125, 1, 1, False), (0.125, 1, 1, True),
                       (0.125, -1, -1, False), (0.125, -1, -1, True)),
}


def tta_views(mode):
    """The views of a TTA mode, as words for metrics.json: ["image (weight 0.5)", "mirror (weight 0.5)"] for flip."""
    if mode not in TTA_MODES:
        raise UserError(f"unknown --tta mode '{mode}'; choose one of {', '.join(TTA_MODES)}")
    names = []
    for weight, rows, cols, mirror in TTA_MODES[mode]:
        where = "" if not (rows or cols) else (" moved down-right 1 px" if rows > 0 else " moved up-left 1 px")
        names.append(f"{'mirror' if mirror else 'image'}{where} (weight {weight:g})")
    return names


def tta_inputs(images, mode):
    """[(weight, view of the images (N, H, W, C)), ...] for TTA_MODES[mode]; the first view is the images."""
    tta_views(mode)  # the one check of the mode
    inputs = []
    for weight, rows, cols, mirror in TTA_MODES[mode]:
        view = translated(images, rows, cols) if rows or cols else np.asarray(images)
        inputs.append((weight, mirrored(view) if mirror else view))
    return inputs


def predict_tta(model, images, batch_size, plain=None, mode="flip"):
    """Probabilities averaged over the views of TTA_MODES[mode] (test-time augmentation).

    `plain`: the model's predictions of `images` when already made (saves a pass).
    """
    total = 0.0
    for index, (weight, view) in enumerate(tta_inputs(images, mode)):
        output = plain if index == 0 and plain is not None else model.predict(view, batch_size=batch_size,
                                                                               verbose=0)
        total = total + weight * np.asarray(output, dtype=np.float64)
    return total


def read_run(run_dir):
    """Check a run folder and return (model name, stats) without loading the model."""
    import results
    rundir.check_run_dir(run_dir)
    results.check_record_has_model(run_dir)
    model_path = os.path.join(run_dir, rundir.MODEL_FILE)
    if not os.path.isfile(model_path):
        raise UserError(f"{model_path}: missing (is '{run_dir}' a run folder made by train.py?)")
    rundir.check_archive(model_path, "the run's model")  # as models.load_model does, before TensorFlow and the data
    stats = data.load_stats(os.path.join(run_dir, rundir.STATS_FILE))
    return rundir.model_name(run_dir), stats


def still_training(run_dir):
    """Whether config.json says the run is not complete (a live or an interrupted train.py)."""
    path = os.path.join(run_dir, rundir.CONFIG_FILE)
    if not os.path.isfile(path):
        return False
    config = rundir.read_json(path, "the run's configuration")
    return isinstance(config, dict) and config.get("status") == "running"


def evaluate_run(run_dir, x_test, y_test, batch_size=DEFAULT_BATCH_SIZE, write=True, tta=None):
    """Evaluate one run folder on uint8 test images and integer labels; return the metrics.

    The images are standardized with the run's stats.json. Timing: loading the model
    is timed on its own; then an untimed warm-up (which traces the predict function
    for a full and a ragged batch), then one timed pass over every test image.
    With `tta` (a TTA_MODES name), untimed passes over the mode's other views add
    test_accuracy_tta, test_loss_tta, tta_mode and tta_views (see predict_tta). With
    `write`, the metrics are written atomically to metrics_path(run_dir).
    """
    import keras  # noqa: F401  (imported, and TensorFlow's devices set up, before the load is timed)
    model_name, stats = read_run(run_dir)
    device = rundir.device_description()
    start = time.perf_counter()
    import models  # TensorFlow: only once a model is needed
    model = models.load_model(run_dir)
    load_seconds = time.perf_counter() - start

    x = data.standardize(x_test, stats)
    model.predict(x[:batch_size + 1], batch_size=batch_size, verbose=0)  # warm-up, untimed
    start = time.perf_counter()
    probabilities = model.predict(x, batch_size=batch_size, verbose=0)
    predict_seconds = time.perf_counter() - start

    metrics = {"model": model_name, "run_dir": os.path.abspath(run_dir)}
    metrics.update(compute_metrics(probabilities, y_test))
    if tta is True:  # the API before the modes
        tta = "flip"
    if tta:
        averaged = compute_metrics(predict_tta(model, x, batch_size, plain=probabilities, mode=tta), y_test)
        metrics.update({"test_accuracy_tta": averaged["test_accuracy"], "test_loss_tta": averaged["test_loss"],
                        "tta_mode": tta, "tta_views": tta_views(tta)})
    metrics.update({
        "predict_seconds": predict_seconds,
        "load_seconds": load_seconds,
        "ms_per_image": 1000 * predict_seconds / len(x),
        "device": device,
        "batch_size": int(batch_size),
        "evaluated": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    })
    if write:
        write_metrics(run_dir, metrics)
    return metrics


# Where the metrics of a committed record (results/NAME, see results.py) go: the record's
# own metrics.json is what the README quotes, and another machine's or data's figures
# must not replace it.
RECORD_METRICS_DIR = os.path.join("runs", "evaluated")


def metrics_path(run_dir):
    """RUN_DIR/metrics.json, or RECORD_METRICS_DIR/NAME/metrics.json for a committed record."""
    import results
    if results.is_record(run_dir):
        return os.path.join(RECORD_METRICS_DIR, os.path.basename(os.path.normpath(run_dir)), rundir.METRICS_FILE)
    return os.path.join(run_dir, rundir.METRICS_FILE)


def write_metrics(run_dir, metrics):
    """Write the run's metrics.json (see metrics_path) atomically; return its path, or None when it was kept.

    A smoke run on part of the test set (--limit) never replaces metrics of a larger
    evaluation: those took the user a full pass over the test set to make.
    """
    path = metrics_path(run_dir)
    with rundir.writing(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.isfile(path):
        try:
            previous = rundir.read_json(path, "earlier test metrics").get("test_images", 0)
        except (UserError, AttributeError):
            previous = 0  # unreadable or not a dict: nothing worth keeping
        if isinstance(previous, int) and previous > metrics["test_images"]:
            return None
    rundir.write_json(path, metrics)
    return path


def format_report(metrics):
    """One run's metrics as readable text: summary, timing, per-class accuracy, confusion matrix."""
    lines = [
        f"{metrics['model']} ({metrics['run_dir']}) on {metrics['test_images']:,} test images",
        f"  test accuracy {100 * metrics['test_accuracy']:.2f} %, top-5 {100 * metrics['top5_accuracy']:.2f} %, "
        f"loss {metrics['test_loss']:.4f}"
        + (f"; with TTA ({metrics.get('tta_mode', 'flip')}) {100 * metrics['test_accuracy_tta']:.2f} %, loss "
           f"{metrics['test_loss_tta']:.4f}" if "test_accuracy_tta" in metrics else ""),
        f"  predict {metrics['predict_seconds']:.2f} s ({metrics['ms_per_image']:.3f} ms/image, "
        f"batch size {metrics['batch_size']}, {metrics['device']}); model load {metrics['load_seconds']:.2f} s",
        "  per-class accuracy: " + ", ".join(
            f"{name} {'n/a' if acc is None else f'{100 * acc:.1f} %'}"
            for name, acc in metrics["per_class_accuracy"].items()),
        "  confusion matrix (rows = true class, columns = predicted):",
    ]
    short = [name[:5] for name in data.CLASS_NAMES]
    lines.append("    " + " " * 10 + "".join(f"{name:>7}" for name in short))
    for name, row in zip(data.CLASS_NAMES, metrics["confusion_matrix"]):
        lines.append(f"    {name:<10}" + "".join(f"{count:>7}" for count in row))
    return "\n".join(lines)


def format_table(all_metrics):
    """The paper's Table 2 (model, seconds to predict the test set, accuracy), the paper's figures beside ours."""
    tta = any("test_accuracy_tta" in metrics for metrics in all_metrics)
    header = (f"{'CNN':<20} {'run':<24} {'Δt (s)':>8} {'Acc. %':>7}" + (f" {'TTA %':>7}" if tta else "")
              + f"   {'paper Δt (s)':>12} {'paper Acc. %':>12}")
    lines = ["Table 2: CNN testing performance (ours, and the paper's on a MacBook Air M3)", header,
             "-" * len(header)]
    for metrics in all_metrics:
        label, paper_seconds, paper_accuracy = PAPER_TABLE2.get(metrics["model"], (metrics["model"], None, None))
        run = os.path.basename(os.path.normpath(metrics["run_dir"]))
        paper = (f"{paper_seconds:>12} {paper_accuracy:>12}" if paper_seconds is not None
                 else f"{'-':>12} {'-':>12}")
        with_tta = ""
        if tta:
            with_tta = (f" {100 * metrics['test_accuracy_tta']:>7.1f}" if "test_accuracy_tta" in metrics
                        else f" {'-':>7}")
        lines.append(f"{label:<20} {run[:24]:<24} {metrics['predict_seconds']:>8.1f} "
                     f"{100 * metrics['test_accuracy']:>7.1f}{with_tta}   {paper}")
    devices = sorted({metrics["device"] for metrics in all_metrics})
    lines.append(f"ours: {', '.join(devices)}; {all_metrics[0]['test_images']:,} test images")
    return "\n".join(lines)


@rundir.one_line_errors("evaluate.py")
def main(argv=None):
    parser = rundir.ArgumentParser(
        prog="evaluate.py", description="Evaluate run folders on the CIFAR-10 test set, print the "
        "paper's Table 2 with the paper's figures beside ours, and write metrics.json into each run (for a "
        f"record kept by results.py collect, into {RECORD_METRICS_DIR}/NAME/ instead: the record stays as it was).")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders made by train.py, or records "
                        "kept by results.py collect --with-model (results/NAME)")
    data.add_data_dir_argument(parser)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"images per predict batch (default: {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--limit", type=int, default=None,
                        help="evaluate on the first N test images only (a smoke run; default: all 10,000)")
    parser.add_argument("--tta", nargs="?", const="flip", choices=tuple(TTA_MODES), help="test-time augmentation: "
                        "average each image's probabilities over several views (test_accuracy_tta; Δt stays "
                        "the plain pass). flip (the default MODE): the image and its mirror; flip-translate: "
                        "those and both moved 1 px down-right and up-left (airbench94's level 2)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, received {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, received {args.limit}")
    for run_dir in args.run_dirs:  # fail on a mistyped folder before loading any data
        read_run(run_dir)
        if still_training(run_dir):
            print(f"evaluate.py: note: {run_dir}: the run is still training or was interrupted (config.json "
                  "says running); its model.keras is the one of an epoch before the end", file=sys.stderr)
    x_test, y_test = load_test_set(args.data_dir, args.limit)
    print(f"Test set: {len(x_test):,} images from {data.describe_source(args.data_dir)}")
    all_metrics = []
    for run_dir in args.run_dirs:
        metrics = evaluate_run(run_dir, x_test, y_test, args.batch_size, write=False, tta=args.tta)
        metrics["test_limit"] = args.limit  # a smoke run on part of the test set says so (results.py refuses it)
        print(format_report(metrics))
        written = write_metrics(run_dir, metrics)
        if written and metrics_path(run_dir) != os.path.join(run_dir, rundir.METRICS_FILE):
            print(f"  {run_dir} is a committed record: its own {rundir.METRICS_FILE} stays as collected")
        print(f"  wrote {written}\n" if written else f"  kept {metrics_path(run_dir)}: "
              f"it holds an evaluation on more test images than these {len(x_test):,}\n")
        all_metrics.append(metrics)
    print(format_table(all_metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())

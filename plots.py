"""The paper's figures from run folders: training curves, confusion matrices, the training images.

    python plots.py runs/vgg16 runs/alexnet --data-dir /data/cifar10 --out figures
    python plots.py results/vgg16_fast_30ep results/vgg16_paper_10ep --out results/figures   # from records

Writes, as PNG (or `--format pdf|svg`):
    OUT/accuracy.png       training and validation accuracy per epoch, every run on one
                           figure, learning-rate reductions marked (Figures 5 and 7); for a
                           run on a continuous schedule (--recipe fast's cosine) its
                           learning rate per epoch instead, on a right-hand axis; a solid
                           line where a vgg16_pretrained run's fine-tuning starts
    OUT/loss.png           the same for the loss (Figure 6)
    OUT/cifar10_first48.png  the first 48 training images with their classes (Figure 1),
                           with --data-dir only
    RUN/confusion_matrix.png  for each run that evaluate.py has evaluated (from metrics.json);
                           a per-run figure stays with its run, like metrics.json; for a
                           committed record (results/NAME, no model needed) it goes to
                           OUT/confusion_matrix_NAME.png instead, the record left as collected
OUT defaults to `figures/` in the current folder. Every figure is written atomically.
"""
import os
import sys

import numpy as np

import data
import rundir
from rundir import UserError

FORMATS = ("png", "pdf", "svg")
FIGURE_SIZE = (6.4, 4.0)  # inches: a full text width of an A4/letter paper at 10 pt fonts
DPI = 200  # PNG resolution, sharp when printed at FIGURE_SIZE
FONT_SIZE = 10  # points, the size of a paper's body text
GRID_ROWS, GRID_COLUMNS = 6, 8  # Figure 1: the first 48 training images
DEFAULT_OUT = "figures"


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (we only ever write files)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE + 1,
                         "legend.fontsize": FONT_SIZE - 1, "savefig.dpi": DPI})
    return plt


def save_figure(figure, path):
    """Save `figure` atomically, in the format its extension names (png, pdf or svg), and close it."""
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    if extension not in FORMATS:
        pyplot().close(figure)
        raise UserError(f"{path}: unsupported figure format '{extension}'; use .png, .pdf or .svg")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with rundir.atomic_path(path) as tmp:
            figure.savefig(tmp, format=extension, bbox_inches="tight")
    finally:
        pyplot().close(figure)
    return path


# --- Reading runs ------------------------------------------------------------------

def read_history(run_dir):
    """history.json as a dict of equal-length lists, checked; a UserError naming the file otherwise."""
    path = os.path.join(run_dir, rundir.HISTORY_FILE)
    history = rundir.read_json(path, "the per-epoch training history")
    if not isinstance(history, dict) or "accuracy" not in history or "loss" not in history:
        raise UserError(f"{path}: needs lists 'accuracy' and 'loss' (one entry per epoch)")
    lengths = {key: len(value) for key, value in history.items() if isinstance(value, list)}
    if len(set(lengths.values())) != 1 or not lengths["accuracy"]:
        raise UserError(f"{path}: lists of unequal length or empty ({lengths})")
    history.setdefault("epoch", list(range(1, lengths["accuracy"] + 1)))
    return history


def run_label(run_dir):
    """A legend label: the model name from config.json, and the folder when that differs."""
    folder = os.path.basename(os.path.normpath(run_dir))
    model = rundir.model_name(run_dir)
    return folder if model == folder else f"{model} ({folder})"


def run_schedule(run_dir):
    """The run's learning-rate schedule from config.json: "plateau" (cuts), "cosine" or "linear" (continuous)."""
    path = os.path.join(run_dir, rundir.CONFIG_FILE)
    if not os.path.isfile(path):
        return "plateau"
    config = rundir.read_json(path, "the run's configuration")
    settings = config.get("settings") if isinstance(config, dict) else None
    return str((settings or {}).get("schedule") or "plateau")


def lr_reductions(history):
    """Epochs (1-based, as in history["epoch"]) whose learning rate is below the previous epoch's.

    The start of fine-tuning (a new optimizer, not a cut) is not one: see fine_tune_start.
    """
    rates = history.get("learning_rate") or []
    phases = history.get("phase") or [1] * len(rates)
    return [history["epoch"][i] for i in range(1, len(rates))
            if rates[i] is not None and rates[i - 1] is not None and rates[i] < rates[i - 1]
            and phases[i] == phases[i - 1]]


def fine_tune_start(history):
    """The first epoch (1-based) of vgg16_pretrained's fine-tuning phase, or None."""
    phases = history.get("phase") or []
    return next((history["epoch"][i] for i, phase in enumerate(phases) if phase == 2), None)


# --- Figures -------------------------------------------------------------------------

def plot_curves(runs, metric, path):
    """Training (solid) and validation (dashed) `metric` per epoch for every run, and its schedule.

    `runs` is a list of (label, history, schedule); `metric` is "accuracy" (shown in %)
    or "loss". A "plateau" run's learning-rate cuts are dotted vertical lines; a run on
    a continuous schedule ("cosine", "linear") changes its rate every step, so its learning rate
    per epoch is drawn instead (dash-dot, on a right-hand axis). Where fine-tuning starts
    (history's phase 2), a solid vertical line.
    """
    plt = pyplot()
    figure, axes = plt.subplots(figsize=FIGURE_SIZE)
    scale = 100 if metric == "accuracy" else 1
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    any_reduction = any_fine_tune = False
    rate_axes = None
    for index, (label, history, schedule) in enumerate(runs):
        colour = colours[index % len(colours)]
        epochs = history["epoch"]
        # Markers as well as lines, so a run of one or two epochs is still visible.
        axes.plot(epochs, np.asarray(history[metric], float) * scale, "-o", markersize=3, color=colour,
                  label=f"{label} training")
        if f"val_{metric}" in history:
            axes.plot(epochs, np.asarray(history[f"val_{metric}"], float) * scale, "--s", markersize=3,
                      color=colour, label=f"{label} validation")
        start = fine_tune_start(history)
        if start is not None:  # before the first fine-tuning epoch
            axes.axvline(start - 0.5, color=colour, linestyle="-", linewidth=1.0, alpha=0.7)
            any_fine_tune = True
        rates = history.get("learning_rate") or []
        if schedule != "plateau" and rates and None not in rates:
            if rate_axes is None:
                rate_axes = axes.twinx()
                rate_axes.set_ylabel("Learning rate (at each epoch's first step)")
            # On the main axes' legend: an empty line there carries the label.
            rate_axes.plot(epochs, rates, "-.", linewidth=1.2, color=colour)
            axes.plot([], [], "-.", linewidth=1.2, color=colour, label=f"{label} learning rate (right axis)")
            continue
        # The rate is cut at the end of an epoch: mark the boundary before the first slower epoch.
        for epoch in lr_reductions(history):
            axes.axvline(epoch - 0.5, color=colour, linestyle=":", linewidth=1.5)
            any_reduction = True
    if any_reduction:  # one neutral legend entry for the markers of every run
        axes.plot([], [], ":", color="black", linewidth=1.5, label="learning rate reduced")
    if any_fine_tune:
        axes.plot([], [], "-", color="black", linewidth=1.0, alpha=0.7, label="fine-tuning starts")
    name = "Accuracy" if metric == "accuracy" else "Loss"
    figures = "Figures 5 and 7" if metric == "accuracy" else "Figure 6"
    axes.set_title(f"Training and validation {name.lower()} ({figures})")
    axes.set_xlabel("Epoch")
    axes.set_ylabel("Accuracy (%)" if metric == "accuracy" else "Loss (categorical cross-entropy, nats)")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.grid(alpha=0.3)
    # Below the axes, so the legend never hides a curve whatever the runs look like.
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
    return save_figure(figure, path)


def plot_confusion_matrix(metrics, label, path):
    """The test-set confusion matrix of one evaluated run (counts, rows = true class)."""
    from sklearn.metrics import ConfusionMatrixDisplay
    plt = pyplot()
    matrix = np.asarray(metrics["confusion_matrix"], dtype=int)
    figure, axes = plt.subplots(figsize=(6.4, 5.6))
    # Counts, not normalized: each row's sum is that class's share of the test images.
    # Our own colour bar: scikit-learn's keeps no handle to label it.
    display = ConfusionMatrixDisplay(matrix, display_labels=data.CLASS_NAMES).plot(
        ax=axes, cmap="Blues", values_format="d", colorbar=False, xticks_rotation=45, text_kw={"fontsize": 7})
    figure.colorbar(display.im_, ax=axes, fraction=0.046, pad=0.04, label="Test images")
    plt.setp(axes.get_xticklabels(), ha="right")  # rotated names end under their column
    axes.set_xlabel("Predicted class")
    axes.set_ylabel("True class")
    axes.set_title(f"Confusion matrix: {label}\ntest accuracy {100 * metrics['test_accuracy']:.1f} % "
                   f"on {int(matrix.sum()):,} images")
    return save_figure(figure, path)


def plot_training_grid(images, labels, path):
    """The first 48 training images with their class names, as the paper's Figure 1."""
    plt = pyplot()
    count = GRID_ROWS * GRID_COLUMNS
    figure, grid = plt.subplots(GRID_ROWS, GRID_COLUMNS, figsize=(8, 6.6))
    for index, axes in enumerate(grid.flat):
        axes.axis("off")
        if index < min(count, len(images)):
            axes.imshow(images[index], interpolation="nearest")
            axes.set_title(data.CLASS_NAMES[int(np.asarray(labels[index]).reshape(-1)[0])], fontsize=8)
    figure.suptitle(f"First {count} images of the training data set (Figure 1)")
    figure.tight_layout()
    return save_figure(figure, path)


def confusion_matrix_path(run_dir, out, fmt):
    """RUN/confusion_matrix.FMT, or OUT/confusion_matrix_NAME.FMT for a committed record
    (results/NAME, see results.py), which keeps only what collect wrote into it."""
    import results
    if results.is_record(run_dir):
        return os.path.join(out, f"confusion_matrix_{os.path.basename(os.path.normpath(run_dir))}.{fmt}")
    return os.path.join(run_dir, f"confusion_matrix.{fmt}")


def make_plots(run_dirs, out=DEFAULT_OUT, data_dir=None, fmt="png", log=print):
    """Write every figure for `run_dirs` (see the module docstring); return the paths written."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    runs = []
    for run_dir in run_dirs:
        rundir.check_run_dir(run_dir)
        runs.append((run_dir, run_label(run_dir), read_history(run_dir)))
    written = []
    curves = [(label, history, run_schedule(run_dir)) for run_dir, label, history in runs]
    written.append(plot_curves(curves, "accuracy", os.path.join(out, f"accuracy.{fmt}")))
    written.append(plot_curves(curves, "loss", os.path.join(out, f"loss.{fmt}")))
    for run_dir, label, _ in runs:
        metrics_path = os.path.join(run_dir, rundir.METRICS_FILE)
        if not os.path.isfile(metrics_path):
            log(f"note: {run_dir}: no {rundir.METRICS_FILE} (run evaluate.py first); confusion matrix skipped")
            continue
        metrics = rundir.read_json(metrics_path, "the test metrics written by evaluate.py")
        if not isinstance(metrics, dict) or "confusion_matrix" not in metrics:
            raise UserError(f"{metrics_path}: has no confusion_matrix (rerun evaluate.py)")
        written.append(plot_confusion_matrix(metrics, label, confusion_matrix_path(run_dir, out, fmt)))
    if data_dir:
        (x_train, y_train), _ = data.load_cifar10(data_dir)
        count = GRID_ROWS * GRID_COLUMNS
        written.append(plot_training_grid(x_train[:count], y_train[:count],
                                          os.path.join(out, f"cifar10_first48.{fmt}")))
    return written


@rundir.one_line_errors("plots.py")
def main(argv=None):
    parser = rundir.ArgumentParser(
        prog="plots.py", description="Draw the paper's figures from run folders: accuracy and loss "
        "curves (Figures 5-7), each evaluated run's confusion matrix, and with --data-dir the first "
        "48 training images (Figure 1).")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders made by train.py, or "
                        "records kept by results.py collect (results/NAME)")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"folder for the figures of all runs (default: {DEFAULT_OUT}/); each run's "
                        "confusion matrix goes into its run folder, a record's (results/NAME) into this folder")
    parser.add_argument("--data-dir", metavar="DIR", help="an official CIFAR-10 layout (as in data.py): "
                        "also draw Figure 1, the first 48 training images")
    parser.add_argument("--format", default="png", choices=FORMATS, help="figure format (default: png)")
    args = parser.parse_args(argv)
    for path in make_plots(args.run_dirs, args.out, args.data_dir, args.format):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

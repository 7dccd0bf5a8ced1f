"""The report's figures from run folders: training curves, confusion matrices, the training images.

    python plots.py runs/vgg16 runs/alexnet runs/vgg16_pretrained --out figures   # Figures 5-7
    python plots.py runs/vgg16 --data-dir /data/cifar10 --out figures              # and Figure 1
    python plots.py results/vgg16_paper results/vgg16_long_80ep_split0_seed1 results/alexnet_paper \
        results/alexnet_nesterov_wd5e-4_pad2_b128_30ep --out results/figures       # the README's

Writes, as PNG (or `--format pdf|svg`):
    OUT/accuracy.png       training (solid) and validation (dashed) accuracy per epoch
                           (Figures 5 and 7): one panel per network with its runs, each run
                           labelled by its recipe (else its folder), and under each a thin
                           panel of the learning rate on a log scale; a vertical line where
                           a vgg16_pretrained run's fine-tuning starts
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
CURVES_WIDTH = 8.0  # inches at most: 1,600 px at DPI, shown at a README's ~800 px with 10 pt text at ~14 px
CURVES_PANEL_WIDTH = 4.0  # inches per network, below CURVES_WIDTH
CURVES_HEIGHT = 4.4  # inches: the curves, the learning rate's thin panel and the legend
DPI = 200  # PNG resolution, sharp on high-density screens and in print
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
    try:
        with rundir.writing(path):  # a read-only or full disk: one line naming the figure
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
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


def curve_labels(run_dirs):
    """Legend labels for the curves: the recipe whose settings a run trained (results.recipe_of),
    else the folder's name; the folder's name too where two runs of one network share a recipe."""
    import results
    labels, models = [], []
    for run_dir in run_dirs:
        path = os.path.join(run_dir, rundir.CONFIG_FILE)
        config = rundir.read_json(path, "the run's configuration") if os.path.isfile(path) else None
        recipe = results.recipe_of(config) if isinstance(config, dict) and "settings" in config else None
        labels.append(recipe or os.path.basename(os.path.normpath(run_dir)))
        models.append(rundir.model_name(run_dir))
    pairs = list(zip(models, labels))
    return [label if pairs.count(pair) == 1 else os.path.basename(os.path.normpath(run_dir))
            for run_dir, label, pair in zip(run_dirs, labels, pairs)]


def run_schedule(run_dir):
    """The run's learning-rate schedule from config.json: "plateau" (cuts), "cosine" or "linear" (continuous)."""
    path = os.path.join(run_dir, rundir.CONFIG_FILE)
    if not os.path.isfile(path):
        return "plateau"
    config = rundir.read_json(path, "the run's configuration")
    settings = config.get("settings") if isinstance(config, dict) else None
    return str((settings or {}).get("schedule") or "plateau")


def fine_tune_start(history):
    """The first epoch (1-based) of vgg16_pretrained's fine-tuning phase, or None."""
    phases = history.get("phase") or []
    return next((history["epoch"][i] for i, phase in enumerate(phases) if phase == 2), None)


# --- Figures -------------------------------------------------------------------------

def plot_curves(runs, metric, path):
    """Small multiples of `metric` per epoch: one column per panel (a network), its runs in it.

    `runs` is a list of (label, history, schedule, panel); `panel` names the column (the
    network) and may be left out, each run then in its own. `metric` is "accuracy" (shown in
    %) or "loss". Each panel draws training (solid) and validation (dashed, where the run held
    images out), one colour per label across the figure, so a recipe keeps its colour in every
    panel. Under each, a thin panel of the learning rate at each epoch's first step, on a log
    scale, so that the report's Adam at 5e-4 and SGD's 0.1 both read: a plateau run's cuts are
    steps, a cosine a curve.
    Where fine-tuning starts (history's phase 2), a vertical line in both panels.
    """
    plt = pyplot()
    runs = [(label, history, schedule, rest[0] if rest else label) for label, history, schedule, *rest in runs]
    panels = list(dict.fromkeys(panel for *_, panel in runs))
    labels = list(dict.fromkeys(label for label, *_ in runs))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour_of = {label: colours[index % len(colours)] for index, label in enumerate(labels)}
    width = max(4.8, min(CURVES_WIDTH, CURVES_PANEL_WIDTH * len(panels)))
    figure, grid = plt.subplots(2, len(panels), figsize=(width, CURVES_HEIGHT), squeeze=False, sharex="col",
                                sharey="row", gridspec_kw={"height_ratios": [3, 1]})
    scale = 100 if metric == "accuracy" else 1
    any_fine_tune = any_validation = False
    for column, panel in enumerate(panels):
        axes, rate_axes = grid[0, column], grid[1, column]
        for label, history, schedule, _ in (run for run in runs if run[3] == panel):
            colour, epochs = colour_of[label], history["epoch"]
            # Markers on short runs only, so a run of one or two epochs is still visible.
            marker = {"marker": "o", "markersize": 3} if len(epochs) <= 20 else {}
            axes.plot(epochs, np.asarray(history[metric], float) * scale, "-", color=colour, **marker)
            if any(value is not None for value in history.get(f"val_{metric}", ())):  # none: no hold-out
                any_validation = True
                axes.plot(epochs, np.asarray(history[f"val_{metric}"], float) * scale, "--", color=colour,
                          **marker)
            rates = history.get("learning_rate") or []
            if rates and None not in rates:
                # A warm-up's first rate is 0, which a log scale cannot place: left out.
                rate_axes.plot(epochs, [rate if rate > 0 else np.nan for rate in rates], color=colour,
                               linewidth=1.2, drawstyle="steps-post" if schedule == "plateau" else "default")
            start = fine_tune_start(history)
            if start is not None:  # before the first fine-tuning epoch
                for where in (axes, rate_axes):
                    where.axvline(start - 0.5, color=colour, linestyle="-", linewidth=1.0, alpha=0.6)
                any_fine_tune = True
        axes.set_title(panel)
        axes.grid(alpha=0.3)
        rate_axes.set_yscale("log")
        rate_axes.grid(alpha=0.3)
        rate_axes.set_xlabel("Epoch")
        rate_axes.xaxis.get_major_locator().set_params(integer=True)
    grid[0, 0].set_ylabel("Accuracy (%)" if metric == "accuracy" else "Loss (cross-entropy)")
    grid[1, 0].set_ylabel("Learning\nrate")
    handles = [plt.Line2D([], [], color=colour_of[label], linewidth=2, label=label) for label in labels]
    handles += [plt.Line2D([], [], color="black", linestyle="-", label="training")]
    if any_validation:
        handles.append(plt.Line2D([], [], color="black", linestyle="--", label="validation"))
    if any_fine_tune:
        handles.append(plt.Line2D([], [], color="black", linewidth=1.0, alpha=0.6, label="fine-tuning starts"))
    figure.suptitle(("Training and validation" if any_validation else "Training") + f" {metric} per epoch")
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    # Below the panels, so it never hides a curve; held by the first panel but placed on the
    # figure, after the layout, which would otherwise shrink that panel to make room for it.
    grid[0, 0].legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False,
                      bbox_to_anchor=(0.5, 0.0), bbox_transform=figure.transFigure)
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
    curves = [(label, history, run_schedule(run_dir), rundir.model_name(run_dir))
              for (run_dir, _, history), label in zip(runs, curve_labels(run_dirs))]
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

"""The committed run records behind the README's results table, and the table itself.

    python results.py collect runs/vgg16_fast_10ep runs/alexnet_fast_30ep   # copy their records into results/
    python results.py table                                              # the README's table, as Markdown

`results/NAME/` keeps, for every run whose numbers the README reports, the run folder's
config.json, history.json and metrics.json (never model files: they are large and
rebuilt by training). `table` reads only those files, so every figure in the README's
results table can be traced to a committed record and re-derived by anyone.
"""
import os
import shutil
import sys

import rundir
from rundir import UserError

RESULTS_DIR = "results"
RECORD_FILES = (rundir.CONFIG_FILE, rundir.HISTORY_FILE, rundir.METRICS_FILE)  # what a record keeps


def collect(run_dir, results_dir=RESULTS_DIR, name=None):
    """Copy a finished, evaluated run's records into results_dir/NAME (default: the folder's name)."""
    rundir.check_run_dir(run_dir)
    config = rundir.read_json(os.path.join(run_dir, rundir.CONFIG_FILE), "the run's settings")
    if config.get("status") != "complete":
        raise UserError(f"{run_dir}: the run is not complete (status {config.get('status')!r}); finish it "
                        "with train.py --resume first")
    if not os.path.isfile(os.path.join(run_dir, rundir.METRICS_FILE)):
        raise UserError(f"{run_dir}: no {rundir.METRICS_FILE}; run evaluate.py on it first")
    target = os.path.join(results_dir, name or os.path.basename(os.path.normpath(run_dir)))
    os.makedirs(target, exist_ok=True)
    for file_name in RECORD_FILES:
        with rundir.atomic_path(os.path.join(target, file_name)) as tmp:
            shutil.copyfile(os.path.join(run_dir, file_name), tmp)
    return target


def read_record(folder):
    """(config, history, metrics) of one record folder; a UserError naming a missing file."""
    return tuple(rundir.read_json(os.path.join(folder, file_name), "a committed run record")
                 for file_name in RECORD_FILES)


def command_of(config):
    """The train.py command that reproduces a run (its recipe, then what differs from the recipe)."""
    import train  # TensorFlow: only when a table is made
    settings = config["settings"]
    recipe = train.recipe_settings(settings.get("recipe", "paper"))
    words = ["python train.py", config["model"]]
    if recipe.recipe != "paper":
        words += ["--recipe", recipe.recipe]
    for key, value in settings.items():
        default = getattr(recipe, key, None)
        if key == "recipe" or value == default or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        words += [flag] if value is True else [flag, str(value)]
    return " ".join(words)


def table(results_dir=RESULTS_DIR):
    """The results as a Markdown table, one row per record folder (sorted by name)."""
    if not os.path.isdir(results_dir):
        raise UserError(f"results folder '{results_dir}' does not exist")
    folders = sorted(entry for entry in os.listdir(results_dir)
                     if os.path.isfile(os.path.join(results_dir, entry, rundir.CONFIG_FILE)))
    if not folders:
        raise UserError(f"results folder '{results_dir}' holds no run records")
    lines = ["| record | command | epochs | training time | val. accuracy (model.keras) | test accuracy "
             "| with TTA | predicting the test set | machine |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for folder in folders:
        config, history, metrics = read_record(os.path.join(results_dir, folder))
        best = config["best_epoch"] - 1
        tta = metrics.get("test_accuracy_tta")
        lines.append(
            f"| `{folder}` | `{command_of(config)}` | {config['epochs_completed']} "
            f"| {config['train_seconds'] / 60:.1f} min | {100 * history['val_accuracy'][best]:.2f} % "
            f"(epoch {best + 1}) | {100 * metrics['test_accuracy']:.2f} % "
            f"| {'-' if tta is None else f'{100 * tta:.2f} %'} "
            f"| {metrics['predict_seconds']:.1f} s (batch {metrics['batch_size']}) | {config['device']} |")
    return "\n".join(lines)


@rundir.one_line_errors("results.py")
def main(argv=None):
    parser = rundir.ArgumentParser(
        prog="results.py", description="Keep the records (config, history, metrics JSON) of the runs the "
        "README reports in results/, and print the README's results table from them.")
    parser.add_argument("--results-dir", default=RESULTS_DIR, help=f"the records' folder (default: {RESULTS_DIR})")
    commands = parser.add_subparsers(dest="command", required=True)
    collect_parser = commands.add_parser("collect", help="copy finished, evaluated run folders' records")
    collect_parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders made by train.py")
    commands.add_parser("table", help="print the results table (Markdown) from the records")
    args = parser.parse_args(argv)
    if args.command == "collect":
        for run_dir in args.run_dirs:
            print(f"wrote {collect(run_dir, args.results_dir)}")
    else:
        print(table(args.results_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())

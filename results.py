"""The committed run records behind the README's results table, and the table itself.

    python results.py collect runs/vgg16 runs/alexnet                  # copy their records into results/
    python results.py collect --with-model runs/vgg16                  # also a small inference model
    python results.py collect --unfinished runs/vgg16      # a stopped run, as far as its last epoch
    python results.py table                 # the README's table: one row per network and recipe
    python results.py records                                          # one row per record
    python results.py paper                          # the report's Tables 1-2 beside ours (its protocol)

`results/NAME/` keeps, for every run whose numbers the README reports, the run folder's
config.json, history.json and metrics.json. With --with-model it also keeps model.keras
as an inference copy (the weights without the optimizer's state: about 5 MB for vgg16)
and stats.json, so that evaluate.py and predict_image.py run on the record right after
installing, with no training. The tables read only those files, so every figure in the
README's results table can be traced to a committed record and re-derived by anyone. A
record's row is the recipe whose settings it trained (recipe_of), whatever name it saved.

A record travels: the copies name the run folder and the data layout they came from,
never a path of the machine that made them (config.json keeps the machine itself).
"""
import contextlib
import datetime
import os
import re
import shutil
import statistics
import sys
import tempfile

import rundir
from rundir import UserError

RESULTS_DIR = "results"
RECORD_FILES = (rundir.CONFIG_FILE, rundir.HISTORY_FILE, rundir.METRICS_FILE)  # what a record keeps


RECORD_KEY = "record"  # in a record's config.json: where it was collected from; evaluate.py reads it


def _portable(path):
    """The last part of a machine's path: what a reader elsewhere can use of it."""
    return os.path.basename(os.path.normpath(path)) if isinstance(path, str) and path else path


def portable_config(config):
    """config.json as a record keeps it: the data layout and caches by name, not by path."""
    config = dict(config)
    config["data_source"] = _portable(config.get("data_source"))
    if isinstance(config.get("features"), dict):
        config["features"] = {key: _portable(value) if key in ("cache_dir", "cache") else value
                              for key, value in config["features"].items()}
    return config


def is_record(folder):
    """Whether `folder` is a committed record (its config.json was written by collect)."""
    path = os.path.join(folder, rundir.CONFIG_FILE)
    if not os.path.isfile(path):
        return False
    config = rundir.read_json(path, "the run's settings")
    return isinstance(config, dict) and RECORD_KEY in config


def check_record_has_model(folder):
    """A UserError when `folder` is a record collected without its model (nothing to evaluate or predict with)."""
    if is_record(folder) and not os.path.isfile(os.path.join(folder, rundir.MODEL_FILE)):
        raise UserError(f"{folder}: a record collected without its model (results.py collect --with-model "
                        "keeps one); it holds the figures only, so use its run folder or a record with a model")


def save_inference_model(run_dir, target):
    """Write the run's model.keras to `target` without its optimizer state.

    A damaged model.keras is a UserError naming it (models.load_model's).
    """
    import keras

    import models
    model = models.load_model(run_dir)
    # A model never compiled has no optimizer to save: the inference copy is the weights alone.
    # model.input, not model.inputs: a list would make the copy expect a list of arrays.
    inference = keras.Model(model.input, model.output, name=model.name)
    inference.save(target)


def unfinished_record(run_dir, config):
    """(config, history) of a stopped run as its record keeps them: what its last commit says.

    A run stopped before its end (Ctrl-C, SIGTERM, a session's end) keeps config.json at
    "running" and its counts in checkpoint/state.json; the record gets status "unfinished"
    and the counts a finished run's config.json has, so every table reads it and says so.
    Refused while a train.py holds the folder, before any epoch completed, when model.keras
    may predate the commit of its best epoch (a stop mid-commit), or when metrics.json
    predates the last commit (evaluated before the run's last epochs).
    """
    import checkpoint  # TensorFlow: only for an unfinished run
    try:
        rundir.RunLock(run_dir).acquire().release()
    except UserError:
        raise UserError(f"{run_dir}: a train.py is still training it; stop it first (Ctrl-C or SIGTERM: its "
                        "completed epochs stay), then evaluate it and collect it") from None
    except OSError as error:  # a folder we cannot write: its lock cannot be tried
        raise UserError(f"{run_dir}: cannot tell whether a train.py holds it ({error.strerror or error})") from None
    state = checkpoint.read_checkpoint(run_dir)
    if state is None:
        raise UserError(f"{run_dir}: no epoch of the run has completed; there is nothing to collect")
    state_path = os.path.join(run_dir, checkpoint.CHECKPOINT_DIR, checkpoint.STATE_FILE)
    watched = "early_stopping" in state and state.get("phase", 1) == 1
    best_epoch = state["early_stopping"]["best_epoch"] + 1 if watched else state["epoch"]
    model_path = os.path.join(run_dir, rundir.MODEL_FILE)
    if not os.path.isfile(model_path):
        raise UserError(f"{model_path}: missing; the run cannot be collected")
    model_time = os.path.getmtime(model_path)
    if best_epoch == state["epoch"] and model_time < os.path.getmtime(state_path):
        raise UserError(f"{run_dir}: model.keras predates the commit of epoch {best_epoch}, its best (the run "
                        "stopped mid-commit); train.py --resume rewrites it, then stop, evaluate and collect it")
    if os.path.getmtime(os.path.join(run_dir, rundir.METRICS_FILE)) < os.path.getmtime(state_path):
        raise UserError(f"{run_dir}: its {rundir.METRICS_FILE} predates the run's last completed epoch; run "
                        "evaluate.py on it again")
    counters = {key: state[key] for key in ("reduce_lr", "early_stopping") if key in state}
    config = dict(config, status="unfinished", train_seconds=state["train_seconds"],
                  epochs_completed=state["epoch"], best_epoch=best_epoch,
                  model_epoch="best by val_loss" if watched else config.get("model_epoch", "last"),
                  callbacks=counters)
    return config, state["history"]


def epochs_run(config):
    """The epochs a record's run trained, and 'unfinished' for a run stopped before its end."""
    count = str(config["epochs_completed"])
    return count + " (unfinished)" if config.get("status") == "unfinished" else count


def collect(run_dir, results_dir=RESULTS_DIR, name=None, with_model=False, overwrite=False, unfinished=False):
    """Copy a finished, evaluated run's records into results_dir/NAME (default: the folder's name).

    With `with_model`, also model.keras (an inference copy) and stats.json. With
    `unfinished`, a stopped run is taken as far as its last completed epoch
    (unfinished_record); it stays resumable, and its record says "unfinished". The record is
    written into a temporary folder beside its place and renamed into it when whole, so
    an interrupted or failed collect leaves no half record; an existing record is replaced
    only with `overwrite`, and never by a mix of the old and new files. A failed write (a
    read-only or full disk) is a WriteError naming the record.
    """
    rundir.check_run_dir(run_dir)
    config = rundir.read_json(os.path.join(run_dir, rundir.CONFIG_FILE), "the run's settings")
    if config.get("status") != "complete" and not (unfinished and config.get("status") == "running"):
        raise UserError(f"{run_dir}: the run is not complete (status {config.get('status')!r}); finish it "
                        "with train.py --resume first (or keep it as it stands with --unfinished)")
    if not os.path.isfile(os.path.join(run_dir, rundir.METRICS_FILE)):
        raise UserError(f"{run_dir}: no {rundir.METRICS_FILE}; run evaluate.py on it first")
    model_path = os.path.join(run_dir, rundir.MODEL_FILE)
    if os.path.isfile(model_path) and (os.path.getmtime(os.path.join(run_dir, rundir.METRICS_FILE))
                                       < os.path.getmtime(model_path)):
        raise UserError(f"{run_dir}: its {rundir.METRICS_FILE} predates its {rundir.MODEL_FILE}; run evaluate.py "
                        "on it again")
    history = rundir.read_json(os.path.join(run_dir, rundir.HISTORY_FILE), "the run's history")
    if config.get("status") == "running":
        config, history = unfinished_record(run_dir, config)
    for needed in (rundir.MODEL_FILE, rundir.STATS_FILE) if with_model else ():
        if not os.path.isfile(os.path.join(run_dir, needed)):
            raise UserError(f"{run_dir}: no {needed} to keep with --with-model")
    metrics = rundir.read_json(os.path.join(run_dir, rundir.METRICS_FILE), "the run's test metrics")
    if metrics.get("test_limit"):
        raise UserError(f"{run_dir}: its {rundir.METRICS_FILE} is of the first {metrics['test_limit']} test images "
                        "(evaluate.py --limit); run evaluate.py on it without --limit first")
    name = name or _portable(run_dir)
    target = os.path.join(results_dir, name)
    if os.path.abspath(target) == os.path.abspath(run_dir):
        raise UserError(f"{target}: that is the run folder itself; collect into another --results-dir")
    if os.path.exists(target) and not overwrite:
        raise UserError(f"{target} already holds a record; --overwrite replaces it")
    config = dict(portable_config(config), record={
        "name": name, "run_folder": _portable(run_dir), "with_model": bool(with_model),
        "collected": datetime.datetime.now().astimezone().isoformat(timespec="seconds")})
    records = {rundir.CONFIG_FILE: config,
               rundir.HISTORY_FILE: history,
               rundir.METRICS_FILE: dict(metrics, run_dir=name)}
    # A failed write (a read-only or full disk, no permission) is one line naming the record.
    with rundir.writing(target):
        os.makedirs(results_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{name}.", dir=results_dir)
    retired = staging + ".old"  # --overwrite: the old record, set aside until the new one is in its place
    try:
        with rundir.writing(target):
            if with_model:
                save_inference_model(run_dir, os.path.join(staging, rundir.MODEL_FILE))
                shutil.copyfile(os.path.join(run_dir, rundir.STATS_FILE), os.path.join(staging, rundir.STATS_FILE))
            for file_name in RECORD_FILES:
                rundir.write_json(os.path.join(staging, file_name), records[file_name])
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(staging, 0o777 & ~mask)  # mkdtemp's folders are 0700; a record is as any folder
            if os.path.exists(target):
                os.rename(target, retired)
            os.rename(staging, target)
    finally:
        if os.path.isdir(retired) and not os.path.exists(target):  # the new record did not take its place
            with contextlib.suppress(OSError):
                os.rename(retired, target)
        shutil.rmtree(staging, ignore_errors=True)
        if os.path.exists(target):  # else the old record stays set aside rather than lost
            shutil.rmtree(retired, ignore_errors=True)
    return target


def read_record(folder):
    """(config, history, metrics) of one record folder; a UserError naming a missing file."""
    return tuple(rundir.read_json(os.path.join(folder, file_name), "a committed run record")
                 for file_name in RECORD_FILES)


# Settings that do not change what a run trains: two records that differ only in these are
# runs of one recipe (the seed is the row's spread, the rest is the machine's or the user's).
NOT_TRAINED = frozenset({"recipe", "seed", "precision", "steps_per_execution", "distribute", "deterministic",
                         "tensorboard"})


def _resolved(model_name, settings):
    """{setting: value} of a run as train.py resolves it, from a Settings or a saved settings dict.

    A setting the record predates is at its default (the run could not set it); a saved
    setting that no longer exists is left out.
    """
    import dataclasses

    import recipes  # TensorFlow: only when a table is made
    if isinstance(settings, dict):
        settings = recipes.saved_settings(settings)
    # A fixed seed and precision: resolve_settings would draw the one and ask the CPU for the other.
    settings = dataclasses.replace(settings, seed=settings.seed if settings.seed is not None else 0,
                                   precision="float32" if settings.precision == "auto" else settings.precision)
    return dataclasses.asdict(recipes.resolve_settings(model_name, settings))


def _differences(config, recipe):
    """{setting: saved value} where a record's run differs from `recipe` for its network."""
    import recipes
    model = config["model"]
    saved = _resolved(model, config["settings"])
    declared = _resolved(model, recipes.recipe_settings(recipe, model))
    return {key: value for key, value in saved.items() if key not in NOT_TRAINED and value != declared[key]}


def recipe_of(config):
    """The recipe that trains exactly what a record's run trained, or None.

    Matched on the settings, not on the name saved in config.json: a record made under a
    recipe name since removed maps to today's recipe when its settings are that recipe's.
    """
    import recipes
    return next((recipe for recipe, served in recipes.RECIPES.items()
                 if config["model"] in served and not _differences(config, recipe)), None)


def command_of(config):
    """The train.py command that reproduces a run: the nearest recipe, then what differs from it."""
    import recipes
    model, settings = config["model"], config["settings"]
    served = [recipe for recipe, networks in recipes.RECIPES.items() if model in networks]
    differences = {recipe: _differences(config, recipe) for recipe in served}
    # The fewest flags; on a tie the recipe the record names, then the report's protocol.
    recipe = min(served, key=lambda name: (len(differences[name]), name != settings.get("recipe"),
                                           name != "paper"))
    words = ["python train.py", model] + (["--recipe", recipe] if recipe != "paper" else [])
    if settings.get("seed") is not None:
        words += ["--seed", str(settings["seed"])]
    for key, value in differences[recipe].items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):  # argparse's BooleanOptionalAction: --flag / --no-flag
            words += [flag if value else "--no-" + flag[2:]]
        else:
            words += [flag, str(value)]
    return " ".join(words)


def _record_folders(results_dir):
    if not os.path.isdir(results_dir):
        raise UserError(f"results folder '{results_dir}' does not exist")
    folders = sorted(entry for entry in os.listdir(results_dir)
                     if os.path.isfile(os.path.join(results_dir, entry, rundir.CONFIG_FILE)))
    if not folders:
        raise UserError(f"results folder '{results_dir}' holds no run records")
    return folders


def _tta(metrics):
    """The TTA accuracy with its mode, or None (records from before the modes were flip)."""
    if metrics.get("test_accuracy_tta") is None:
        return None
    return metrics["test_accuracy_tta"], metrics.get("tta_mode", "flip")


def _validation_accuracy(history, best):
    """The validation accuracy of the epoch `best` (0-based), or what stands for it in a run with no hold-out."""
    accuracy = history["val_accuracy"][best]
    return "none (--validation-split 0)" if accuracy is None else f"{100 * accuracy:.2f} %"


def records_table(results_dir=RESULTS_DIR):
    """One Markdown row per record folder (sorted by name)."""
    lines = ["| record | command | epochs | training time | val. accuracy (model.keras) | test accuracy "
             "| with TTA | predicting the test set | machine |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for folder in _record_folders(results_dir):
        config, history, metrics = read_record(os.path.join(results_dir, folder))
        best = config["best_epoch"] - 1
        tta = _tta(metrics)
        cuts = ", ".join(f"{epoch}: {rate:.3g}" for epoch, rate in learning_rate_cuts(history)) or "none"
        lines.append(
            f"| `{folder}` | `{command_of(config)}` | {epochs_run(config)} "
            f"| {config['train_seconds'] / 60:.1f} min | {_validation_accuracy(history, best)}"
            + ("" if history["val_accuracy"][best] is None else f" (epoch {best + 1})")
            + f" | {100 * metrics['test_accuracy']:.2f} % "
            f"| {'-' if tta is None else f'{100 * tta[0]:.2f} % ({tta[1]})'} "
            f"| {metrics['predict_seconds']:.1f} s (batch {metrics['batch_size']}) | {config['device']} |")
    return "\n".join(lines)


def mean_std(values):
    """Accuracies (fractions) as '90.12 %' for one value, '90.12 ± 0.15 %' (sample std) for more."""
    if len(values) == 1:
        return f"{100 * values[0]:.2f} %"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f} %"


PRECISION_WORDS = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}  # config's policy


# The report's Tables 1 and 2 (Gomez Cruz 2025, section 4), keyed by our model names: training
# minutes on a MacBook Air M3, validation accuracy % (on augmented images: its generator fed
# validation too), test-set prediction seconds and test accuracy % (Table 2's "Val. Acc." is
# the test set's, section 4's text says).
PAPER_TABLES = {
    "vgg16": {"label": "Scratch VGG16", "train_minutes": 249, "val_accuracy": 90, "predict_seconds": 4,
              "test_accuracy": 90},
    "alexnet": {"label": "Scratch AlexNet", "train_minutes": 108, "val_accuracy": 72, "predict_seconds": 3,
                "test_accuracy": 74},
    "vgg16_pretrained": {"label": "Pretrained VGG16", "train_minutes": 150, "val_accuracy": 70,
                         "predict_seconds": 100, "test_accuracy": 77},
}
REPRODUCED_WITHIN = 1.0  # accuracy points: closer than this to the report's test figure is "reproduced"


def verdict(ours, theirs):
    """'reproduced', 'beaten by X points' or 'short by X points': our test accuracy (%) against the report's."""
    gap = ours - theirs
    if abs(gap) <= REPRODUCED_WITHIN:
        return f"reproduced ({gap:+.1f} points)"
    return f"beaten by {gap:.1f} points" if gap > 0 else f"short by {-gap:.1f} points"


def cpu_class(device):
    """(CPU class, cores) of config.json's device: 'CPU (Intel(R) Xeon(R) Processor, 2 cores, AMX)' gives
    ('Intel Xeon with AMX', '2 cores'); a device in another form is its own class, with no cores."""
    match = re.fullmatch(r"CPU \((.*)\)", device)
    if not match:
        return device, None
    name, *details = [part.strip() for part in match.group(1).split(",")]
    name = " ".join(re.sub(r"\((R|TM)\)|\bProcessor\b|\bCPU\b", " ", name).split())
    cores = next((detail for detail in details if re.fullmatch(r"\d+ cores?", detail)), None)
    features = [detail for detail in details if detail != cores]
    return (f"{name} with {' and '.join(features)}" if features else name), cores


def _minutes(seconds):
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes >= 100 else f"{minutes:.1f} min"


def _a(noun):
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _join(words):
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def recipe_runs(results_dir=RESULTS_DIR):
    """({(recipe, model): {(device, policy): [(folder, config, metrics)]}}, [folders no recipe trains])."""
    runs, unmatched = {}, []
    for folder in _record_folders(results_dir):
        config, _, metrics = read_record(os.path.join(results_dir, folder))
        recipe = recipe_of(config)
        if recipe is None:
            unmatched.append(folder)
            continue
        machine = (config["device"], config.get("policy", "float32"))
        runs.setdefault((recipe, config["model"]), {}).setdefault(machine, []).append((folder, config, metrics))
    return runs, unmatched


def table(results_dir=RESULTS_DIR):
    """The README's results table (Markdown): one row per network and recipe, then one note.

    A row is the records whose settings are the recipe's (recipe_of), on one machine in one
    precision: the mean and sample standard deviation over their seeds, beside the report's
    test accuracy. Where one recipe ran on several machines, the row is the machine with the
    most seeds; the others, the training times and the CPUs are in the note under the table.
    """
    import recipes
    runs, unmatched = recipe_runs(results_dir)
    if not runs:
        raise UserError(f"results folder '{results_dir}' holds no record of a recipe's settings "
                        "(results.py records lists every record)")
    lines = ["| network | command | epochs | seeds | test accuracy | with TTA | the report | ours against the "
             "report | records |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows, others = [], []
    for recipe, model in [(recipe, model) for recipe, served in recipes.RECIPES.items() for model in served]:
        if (recipe, model) not in runs:
            continue
        machines = runs[(recipe, model)]
        machine = max(machines, key=lambda key: len(machines[key]))  # the first of the most seeds
        rows.append((recipe, model, machine, machines[machine]))
        others += [(recipe, model, key, members) for key, members in machines.items() if key != machine]
    modes = {mode for *_, members in rows + others for _, _, metrics in members
             for mode in [(_tta(metrics) or (None, None))[1]]}
    for recipe, model, _, members in rows:
        configs = [config for _, config, _ in members]
        tests = [metrics["test_accuracy"] for _, _, metrics in members]
        ttas = [_tta(metrics) for _, _, metrics in members]
        with_tta = mean_std([tta[0] for tta in ttas]) if all(ttas) else "-"
        if all(ttas) and len(modes) > 1:
            with_tta += f" ({', '.join(sorted({tta[1] for tta in ttas}))})"
        epochs = []
        for config in configs:
            words = epochs_run(config)
            settings = config["settings"]
            if (config.get("status") == "complete" and config["epochs_completed"] < settings["epochs"]
                    and settings.get("schedule", "plateau") == "plateau"):  # EarlyStopping ended it
                words += " (early stop)"
            epochs.append(words)
        report = PAPER_TABLES.get(model)
        theirs = f"{report['test_accuracy']} %" if report else "-"
        against = verdict(100 * statistics.mean(tests), report["test_accuracy"]) if report else "-"
        command = f"python train.py {model}" + (f" --recipe {recipe}" if recipe != "paper" else "")
        lines.append(
            f"| {model} | `{command}` | {' / '.join(dict.fromkeys(epochs))} "
            f"| {', '.join(str(config['settings'].get('seed')) for config in configs)} | {mean_std(tests)} "
            f"| {with_tta} | {theirs} | {against} "
            f"| {', '.join(f'`{folder}`' for folder, _, _ in members)} |")
    return "\n".join(lines + ["", _note(rows, others, modes, unmatched)])


def _note(rows, others, modes, unmatched):
    """The paragraph under the table: training times by CPU class, the runs on other CPUs, TTA."""
    devices = [machine[0] for *_, machine, _ in rows + others]
    cores = {cpu_class(device)[1] for device in devices}
    where = f"on {cores.pop()} of" if len(cores) == 1 and None not in cores else "on"
    by_cpu = {}
    for recipe, model, (device, policy), members in rows:
        by_cpu.setdefault(cpu_class(device)[0], {}).setdefault(PRECISION_WORDS.get(policy, policy), []).append(
            f"{model} `{recipe}` {_minutes(statistics.mean(config['train_seconds'] for _, config, _ in members))}")
    sentences = ["Test accuracy on the 10,000 test images: the mean and sample standard deviation over the "
                 "seeds. Training time (mean over the seeds), " + "; ".join(
                     f"{where} {_a(cpu)}: " + ", ".join(f"{_join(items)} ({precision})"
                                                       for precision, items in precisions.items())
                     for cpu, precisions in by_cpu.items()) + "."]
    report = [f"{PAPER_TABLES[model]['train_minutes']} min ({model})" for recipe, model, *_ in rows
              if recipe == "paper" and model in PAPER_TABLES]
    if report:
        sentences.append(f"The report: {_join(report)} on a MacBook Air M3.")
    for recipe, model, (device, policy), members in others:
        tests = [metrics["test_accuracy"] for _, _, metrics in members]
        ttas = [_tta(metrics) for _, _, metrics in members]
        seeds = ", ".join(str(config["settings"].get("seed")) for _, config, _ in members)
        sentences.append(
            f"`python train.py {model}" + (f" --recipe {recipe}" if recipe != "paper" else "") + "` "
            f"on {_a(cpu_class(device)[0])} ({PRECISION_WORDS.get(policy, policy)}), "
            f"seed{'s' if len(members) > 1 else ''} {seeds}: {mean_std(tests)}"
            + (f", {mean_std([tta[0] for tta in ttas])} with TTA" if all(ttas) else "")
            + f", {_minutes(statistics.mean(config['train_seconds'] for _, config, _ in members))} "
            f"({', '.join(f'`{folder}`' for folder, _, _ in members)}).")
    if len(modes) == 1 and None not in modes:
        sentences.append(f"With TTA: `evaluate.py --tta {modes.pop()}`.")
    if unmatched:
        sentences.append(f"Not in the table, as no recipe trains their settings (`results.py records` lists "
                         f"them): {', '.join(f'`{folder}`' for folder in unmatched)}.")
    return " ".join(sentences)


def learning_rate_cuts(history):
    """[(epoch, rate)]: each epoch that trained at a lower learning rate than the one before it.

    history.json's learning_rate is each epoch's rate at its first step, so a cut
    ReduceLROnPlateau made at the end of epoch N shows as (N + 1, the new rate).
    """
    rates = history.get("learning_rate") or []
    return [(history["epoch"][index], rate) for index, rate in enumerate(rates)
            if index and rate < rates[index - 1] * (1 - 1e-6)]


def paper_table(results_dir=RESULTS_DIR):
    """The report's Tables 1-2 beside ours, from the records trained with its protocol (--recipe paper).

    A record stopped by --epochs before its protocol's end is listed, marked as partial, and
    so is a run stopped before its end and collected with --unfinished.
    """
    import recipes
    lines = ["| model | record | epochs run (kept) | training time | val. accuracy (kept epoch, clean) "
             "| learning-rate cuts (first epoch at the rate) | test accuracy | with TTA | predicting the test set "
             "| machine | the report | ours against the report's test accuracy |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for folder in _record_folders(results_dir):
        config, history, metrics = read_record(os.path.join(results_dir, folder))
        settings = config["settings"]
        if settings.get("recipe", "paper") != "paper" or config["model"] not in PAPER_TABLES:
            continue
        paper = PAPER_TABLES[config["model"]]
        best = config["best_epoch"] - 1
        protocol = recipes.recipe_settings("paper", config["model"])
        partial = settings["epochs"] < protocol.epochs and config["epochs_completed"] == settings["epochs"]
        unfinished = config.get("status") == "unfinished"
        test = 100 * metrics["test_accuracy"]
        tta = _tta(metrics)
        cuts = ", ".join(f"{epoch}: {rate:.3g}" for epoch, rate in learning_rate_cuts(history)) or "none"
        lines.append(
            f"| {paper['label']} | `{folder}` | {config['epochs_completed']} ({best + 1})"
            + (f", partial: --epochs {settings['epochs']}" if partial else "")
            + (f", unfinished: stopped before its end (up to {settings['epochs']} epochs)" if unfinished else "")
            + f" | {config['train_seconds'] / 60:.0f} min | {_validation_accuracy(history, best)} "
            f"| {cuts} | {test:.2f} % | {'-' if tta is None else f'{100 * tta[0]:.2f} % ({tta[1]})'} "
            f"| {metrics['predict_seconds']:.1f} s | {config['device']} "
            f"| {paper['train_minutes']} min, val. {paper['val_accuracy']} % (augmented), test "
            f"{paper['test_accuracy']} %, {paper['predict_seconds']} s (MacBook Air M3) "
            f"| {verdict(test, paper['test_accuracy'])}" + (" after a partial run" if partial or unfinished else "")
            + " |")
    if len(lines) == 2:
        raise UserError(f"results folder '{results_dir}' holds no record trained with the report's protocol")
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
    collect_parser.add_argument("--overwrite", action="store_true", help="replace a record of the same name "
                                "(the old one stays until the new one is whole)")
    collect_parser.add_argument("--unfinished", action="store_true", help="also take a run stopped before its "
                                "end (Ctrl-C, SIGTERM), as far as its last completed epoch: the record says "
                                "unfinished, the run stays resumable")
    collect_parser.add_argument("--with-model", action="store_true", help="also keep model.keras (an inference "
                                "copy without the optimizer's state) and stats.json, so the record can be "
                                "evaluated and used for predictions without training")
    commands.add_parser("table", help="print the README's results table (Markdown): one row per network and "
                        "recipe, the mean and standard deviation over its seeds, beside the report; the "
                        "training times and CPUs in a note under it")
    commands.add_parser("records", help="print one row per record (Markdown)")
    commands.add_parser("paper", help="print the report's Tables 1 and 2 beside ours (Markdown), from the "
                        "records trained with its protocol, with reproduced / beaten / short")
    args = parser.parse_args(argv)
    if args.command == "collect":
        for run_dir in args.run_dirs:
            target = collect(run_dir, args.results_dir, with_model=args.with_model, overwrite=args.overwrite,
                             unfinished=args.unfinished)
            print(f"wrote {target}")
    elif args.command == "records":
        print(records_table(args.results_dir))
    elif args.command == "paper":
        print(paper_table(args.results_dir))
    else:
        print(table(args.results_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())

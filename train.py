"""Train one of the report's networks with its protocol into a self-contained, resumable run folder.

    python train.py vgg16                          # the paper's protocol, into runs/vgg16/
    python train.py alexnet --limit 2000 --epochs 2 --run-dir runs/alexnet_smoke
    python train.py vgg16 --resume                 # continue a killed run after its last completed epoch
    python train.py vgg16 --recipe short           # the best 30-epoch settings: about half an hour on 2 CPU cores

The paper's protocol (Gomez Cruz 2025, section 3) is the default: Adam at 5e-4,
categorical cross-entropy, batch 64, up to 300 epochs, ReduceLROnPlateau and
EarlyStopping on val_loss, the 45,000-image split standardized and augmented by the
paper's ImageDataGenerator. One deviation, on purpose: validation images are clean by
default (the paper augmented them too; --augment-validation reproduces that).
recipes.RECIPES names the other sets of defaults for each network (docs/recipes.md).

Three rooms: recipes.py says what a run trains with (Settings, RECIPES, the optimizer,
schedule, loss and callbacks); checkpoint.py how a run is kept and continued (the run
folder, the per-epoch commit, resume, the stop of a diverged run); this file the
training itself (devices, inputs, the fit and its two transfer phases) and the command line.
"""
import argparse
import dataclasses
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import textwrap

import rundir  # first: it quiets TensorFlow's C++ start-up logging before TF loads
from rundir import UserError

import keras
import numpy as np
import tensorflow as tf

import data
import models
from averaging import WeightAverage
from checkpoint import (CHECKPOINT_DIR, HISTORY_KEYS, TENSORBOARD_DIR, RunFolderCheckpoint, StopOnNonFiniteLoss,
                        check_same_data, now, open_run_dir, read_checkpoint, restore, session_seed,
                        watcher_counters)
from recipes import (PRETRAINED_ONLY, RECIPE_PURPOSES, RECIPES, RESUME_MAY_CHANGE, Settings, check_flags_used,
                     check_settings, compile_model, fine_tune_blocks, fine_tune_settings, load_settings, make_callbacks,
                     pipeline_options, recipe_settings, resolve_settings)

PROG = "train.py"
# SWA's BatchNorm statistics: 40 batches of 128 training images, after which BatchNorm's
# moving averages (momentum 0.9 in the recipes) keep under 2 % of where they started.
SWA_BATCHNORM_IMAGES = 5_120
# --- Devices ------------------------------------------------------------------------

def split_cpu(count):
    """Present the CPU as `count` logical devices (to exercise --distribute without GPUs).

    Must run before TensorFlow initializes its devices: first thing in a fresh process.
    """
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError as error:
        raise UserError(f"--cpu-devices {count}: TensorFlow is already initialized ({error})") from None


class _MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy with a reduce() that takes what Keras 3's fit passes it.

    With two or more workers, fit failed before its first step (keras-team/keras#20585,
    seen with Keras 3.15 on TF 2.18 and 2.21): it asks reduce() for a whole (x, y) batch
    at once, and for the mean over axis 0 of each replica's scalar loss and metrics;
    this strategy reduces one value at a time and has no axis 0 in a scalar. So: each
    value of the structure on its own, and a scalar's mean over the replicas alone.
    """

    def reduce(self, reduce_op, value, axis):
        def one(item):
            scalar = self.experimental_local_results(item)[0].shape.rank == 0
            return super(_MultiWorkerStrategy, self).reduce(reduce_op, item, None if scalar else axis)
        return tf.nest.map_structure(one, value)


def make_strategy(distribute):
    """The tf.distribute strategy for --distribute (none: the default strategy, one device)."""
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    if distribute == "multiworker":
        # Reads TF_CONFIG; without it, a cluster of one worker.
        return _MultiWorkerStrategy()
    return tf.distribute.get_strategy()


def _is_chief(strategy):
    """Whether this process writes the run folder (multi-worker: the chief, else worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())


# --- Data ---------------------------------------------------------------------------

def make_inputs(settings, x_train, y_train, x_valid, y_valid, stats, seed, initial_epoch, heavy=None):
    """fit() arguments for the chosen augmentation: {"x", "y", "validation_data", ...}; no
    validation_data when there are no validation images (--validation-split 0).

    heavy: augment.RefineStage's switch, for a run with --refine-epochs.
    """
    batch_size = settings.batch_size
    y_train, y_valid = data.one_hot(y_train), data.one_hot(y_valid)
    held_out = len(x_valid) > 0
    if settings.augmentation in ("fast", "crop"):
        import augment  # the tf.data pipelines, imported only when asked for
        transform = {"fast": "paper", "crop": "crop"}[settings.augmentation]
        # shuffle=False for fit: the dataset reshuffles itself every epoch.
        inputs = {"shuffle": False,
                  "x": augment.make_dataset(x_train, y_train, stats, batch_size, augment=transform,
                                            shuffle=True, seed=seed, heavy=heavy, **pipeline_options(settings))}
        if held_out:
            inputs["validation_data"] = (
                augment.make_dataset(x_valid, y_valid, stats, batch_size, augment=transform, shuffle=False,
                                     seed=seed, crop_padding=settings.crop_padding)
                if settings.augment_validation else
                augment.make_dataset(x_valid, y_valid, stats, batch_size, augment=None, shuffle=False))
        return inputs
    if settings.augmentation == "none":
        inputs = {"x": data.standardize(x_train, stats), "y": y_train, "batch_size": batch_size, "shuffle": True}
    else:
        # The paper's path: ImageDataGenerator.flow over standardized images. With a seed,
        # flow() reseeds numpy before each batch from seed + batches seen; starting that count
        # at the resumed epoch keeps a resumed run from replaying epoch 1's augmentations.
        train_flow = data.paper_generator().flow(data.standardize(x_train, stats), y_train, batch_size=batch_size,
                                                 shuffle=True, seed=seed)
        train_flow.total_batches_seen = initial_epoch * len(train_flow)
        inputs = {"x": train_flow}
    if held_out:
        valid = (data.standardize(x_valid, stats), y_valid)
        if settings.augment_validation and settings.augmentation == "idg":
            valid = data.paper_generator().flow(*valid, batch_size=batch_size, shuffle=False, seed=seed + 1)
            valid.total_batches_seen = initial_epoch * len(valid)
        inputs.update(validation_data=valid, validation_batch_size=batch_size)
    return inputs


# --- Training -----------------------------------------------------------------------

def _print_start(model_name, model, settings, config, run_dir, initial_epoch, policy, log):
    total, _, frozen = models.count_parameters(model)
    split = config["split"]
    limit = f" (--limit {settings.limit})" if settings.limit else ""
    log(f"{PROG}: {model_name}, {total:,} parameters ({frozen:,} frozen), policy {policy}")
    log(f"  device    {config['device']}; strategy {config['strategy']['name']} "
        f"({config['strategy']['replicas']} replica(s))")
    log(f"  data      {config['data_source']}: " + (
        f"{split['train']:,} training, {split['valid']:,} validation images{limit}, validation "
        f"{'augmented' if settings.augment_validation else 'clean'}" if split["valid"] else
        f"{split['train']:,} training images{limit}, none held out for validation (--validation-split 0)"))
    log(f"  run       {os.path.abspath(run_dir)}"
        + (f" (resuming after epoch {initial_epoch})" if initial_epoch else ""))
    # What the recipe or a flag set, then the paper's defaults; settings the run never reads are left out.
    pairs = {True: [], False: []}
    for field in dataclasses.fields(Settings):
        when = field.metadata.get("when")
        if ((field.name in PRETRAINED_ONLY and model_name != "vgg16_pretrained")
                or (when and getattr(settings, when[0]) not in when[1])):
            continue
        value = getattr(settings, field.name)
        pairs[value != field.default].append(f"{field.name} {value}")
    for title, items in (("set", pairs[True]), ("defaults", pairs[False])):
        log(textwrap.fill(", ".join(items), width=100, initial_indent=f"  {title:<10}",
                          subsequent_indent=" " * 12, break_on_hyphens=False))


def train(model_name, settings=Settings(), run_dir=None, data_dir=None, resume=False, overwrite=False,
          log=print, cache_dir=None):
    """Train `model_name` with `settings` into `run_dir` and return its history dict.

    Args:
        model_name: a key of models.MODELS.
        settings: a Settings (the paper's protocol by default). With resume=True, pass
            load_settings(run_dir), optionally changed in RESUME_MAY_CHANGE only.
        run_dir: the run folder (default runs/<model_name>).
        data_dir: an official CIFAR-10 layout (see data.py); on resume, default the run's.
        resume: continue the run in run_dir after its last completed epoch.
        overwrite: replace a run already in run_dir.
        log: where the start-up block and summary go.
        cache_dir: where --cache-features keeps the frozen base's features (default
            features.default_cache_dir()).

    Returns:
        The history: a dict of per-epoch lists (keys HISTORY_KEYS), all epochs of the run.

    Raises:
        UserError (data.DataError, models.WeightsError): unusable input, told in one line.
    """
    check_settings(model_name, settings)
    run_dir = run_dir or os.path.join("runs", model_name)
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other: continue the run or replace it")
    settings = resolve_settings(model_name, settings)

    # Strategy first: MultiWorkerMirroredStrategy must exist before other TensorFlow work.
    strategy = make_strategy(settings.distribute)
    chief = _is_chief(strategy)
    previous, created, lock = None, False, None
    if chief:
        previous, created, lock = open_run_dir(run_dir, resume, overwrite)
    elif resume:
        previous = rundir.read_json(os.path.join(run_dir, rundir.CONFIG_FILE), "the run's settings")
    try:
        return _train_locked(model_name, settings, run_dir, data_dir, log, strategy, chief, previous, created,
                             cache_dir)
    except rundir.WriteError as error:  # nothing committed was touched: say how to go on once it is fixed
        if not os.path.isfile(os.path.join(run_dir, rundir.CONFIG_FILE)):
            raise UserError(f"{error.problem}; {error.remedy}, then start the run again with --overwrite") from None
        try:
            done = (read_checkpoint(run_dir) or {}).get("epoch", 0)
        except UserError:
            done = None
        kept = {None: "", 0: " (no epoch was completed)"}.get(done, f" (it goes on after epoch {done})")
        raise UserError(f"{error.problem}; {error.remedy}, then continue with: python train.py {model_name} "
                        f"--resume --run-dir {run_dir}{kept}") from None
    finally:
        if lock is not None:
            lock.release()


def _train_locked(model_name, settings, run_dir, data_dir, log, strategy, chief, previous, created, cache_dir):
    """train() once the run folder is ours: resume checks, data, model, fit, the final records."""
    state = None
    if previous is not None:
        if previous.get("model") != model_name:
            raise UserError(f"--resume: '{run_dir}' holds a {previous.get('model')} run, not {model_name}")
        saved = load_settings(run_dir)
        for field in dataclasses.fields(Settings):
            given, kept = getattr(settings, field.name), getattr(saved, field.name)
            if field.name not in RESUME_MAY_CHANGE and given != kept:
                raise UserError(f"--resume continues '{run_dir}' with its saved settings; {field.name} "
                                f"differs (saved {kept!r}, given {given!r})")
        if data_dir is None and previous.get("data_source") != data.describe_source(None):
            data_dir = previous.get("data_source")
        if cache_dir is None and previous.get("features"):  # the cache the run started with
            cache_dir = previous["features"].get("cache_dir")
        state = read_checkpoint(run_dir, fall_back=True, log=log)  # a damaged last epoch: the one before
    initial_epoch = state["epoch"] if state else 0
    # Non-chief workers take part in every save (collective reads) but into a scratch folder.
    write_dir = run_dir if chief else tempfile.mkdtemp(prefix="train-worker-")

    old_policy = keras.mixed_precision.global_policy().name
    gpus = tf.config.list_physical_devices("GPU")
    try:
        policy = models.set_precision(settings.precision, on_gpu=bool(gpus))
        if policy == "mixed_bfloat16" and rundir.cpu_description()[1] is False:
            log(f"{PROG}: warning: this CPU has no AVX-512 BF16 or AMX, so TensorFlow emulates "
                "bfloat16 and --precision mixed trains several times slower than float32")
        if settings.deterministic:
            tf.config.experimental.enable_op_determinism()
        seed = session_seed(settings.seed, initial_epoch)
        keras.utils.set_random_seed(seed)
        try:
            with strategy.scope():
                # The model first: a missing pretrained weights file stops us before any data loads.
                # A resumed checkpoint brings every weight, so nothing is downloaded for it.
                model = models.build_model(model_name, weights=None if state else settings.weights,
                                           dropout_scale=settings.dropout_scale,
                                           bn_momentum=settings.bn_momentum, image_size=settings.image_size,
                                           preprocessing=settings.preprocessing)
            split = data.load_split(data_dir, settings.limit, settings.batch_size, settings.validation_split)
            x_train, y_train, x_valid, y_valid = split
            steps = settings.epochs * math.ceil(len(x_train) / settings.batch_size)
            if settings.ema_momentum and settings.ema_every > steps:
                raise UserError(f"--ema-every {settings.ema_every} is more than the run's {steps} steps: the "
                                "weights' average would never be updated")
        except BaseException:
            if created and os.path.isdir(run_dir):  # leave no empty folder behind a failed start
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        stats = data.compute_stats(x_train)
        if previous is not None:
            check_same_data(run_dir, stats)
        if not state and settings.init != "keras":  # a resumed run's kernels come from its checkpoint
            models.initialize(model, settings.init, data.standardize(x_train[:models.WHITENING_IMAGES], stats))
        if model_name == "vgg16_pretrained" and settings.preprocessing == "imagenet":
            stats["input"] = data.PIXEL_INPUT  # the model takes 0-255 pixels: every script feeds it those
        steps_per_epoch = math.ceil(len(x_train) / settings.batch_size)
        # A checkpoint of the fine-tuning phase holds its optimizer: build that one to receive it.
        fine_tuning = bool(state) and 2 in state["history"].get("phase", [])
        with strategy.scope():
            if fine_tuning:
                models.unfreeze(model, fine_tune_blocks(settings))
                compile_model(model, fine_tune_settings(settings), steps_per_epoch)
            else:
                compile_model(model, settings, steps_per_epoch)
        config = dict(previous) if previous else {"model": model_name, "started": now()}
        config.update({
            "settings": dataclasses.asdict(settings),
            "data_source": data.describe_source(data_dir),
            "device": rundir.device_description(),
            "strategy": {"name": settings.distribute, "replicas": strategy.num_replicas_in_sync},
            "policy": policy,
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                         "numpy": np.__version__, "python": platform.python_version()},
            "parameters": models.count_parameters(model)[0],
            "split": {"train": len(x_train), "valid": len(x_valid)},
            "status": "running",
        })
        if previous is not None:
            config["resumed"] = list(previous.get("resumed", [])) + [{"at": now(), "after_epoch": initial_epoch}]
        data.save_stats(stats, os.path.join(write_dir, rundir.STATS_FILE))
        rundir.write_json(os.path.join(write_dir, rundir.CONFIG_FILE), config)

        history = {key: [] for key in HISTORY_KEYS}
        best_weights = None
        average = None
        if settings.ema_momentum:
            average = WeightAverage(settings.ema_momentum, settings.ema_every)
        elif settings.swa_epochs:  # one snapshot at the end of each of the last swa_epochs epochs
            average = WeightAverage(None, steps_per_epoch, start=(settings.epochs - settings.swa_epochs)
                                    * steps_per_epoch, batch_size=settings.batch_size,
                                    batchnorm_images=data.standardize(x_train[:SWA_BATCHNORM_IMAGES], stats))
        if state:
            done = len(state["history"]["epoch"])  # runs from before "phase" existed were all phase 1
            history = {key: list(state["history"].get(key, [1] * done)) for key in HISTORY_KEYS}
            best_weights = restore(model, run_dir, write_dir, state, strategy, average)
            rundir.write_json(os.path.join(write_dir, rundir.HISTORY_FILE), history)

        watchers = make_callbacks(settings)
        checkpoint = RunFolderCheckpoint(write_dir, watchers, history, settings.epochs, state=state,
                                         best_weights=best_weights,
                                         seconds_before=state["train_seconds"] if state else 0.0, log=log,
                                         average=average)
        refine = None
        if settings.refine_epochs:
            import augment  # the tf.data pipelines, which the refine stage switches
            refine = augment.RefineStage(settings.epochs - settings.refine_epochs,
                                         log=lambda line: log(f"{PROG}: {line}"))
        callbacks = [StopOnNonFiniteLoss(run_dir, settings.learning_rate), *watchers.values(),
                     *([average] if average else []), *([refine] if refine else []),
                     checkpoint]  # this order: see RunFolderCheckpoint
        if settings.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(os.path.join(write_dir, TENSORBOARD_DIR)))
        verbose = 1 if sys.stdout.isatty() else 2

        _print_start(model_name, model, settings, config, run_dir, initial_epoch, policy, log)
        if fine_tuning:  # resumed inside phase 2: phase 1's counters are in the checkpoint
            callback_state = {key: state[key] for key in watchers}
        elif initial_epoch < settings.epochs and not (state and state["stopped"]):
            if settings.cache_features:
                fit_model, inputs = _cached_head(model, settings, split, stats, initial_epoch, cache_dir, config,
                                                 write_dir, log)
                checkpoint.saved_model = model  # the checkpoints hold the whole model, not the head
                if checkpoint.best_weights is not None:
                    checkpoint.best_weights = head_weights(model, fit_model, checkpoint.best_weights)
            else:
                fit_model = model
                inputs = make_inputs(settings, x_train, y_train, x_valid, y_valid, stats, seed, initial_epoch,
                                     heavy=refine.heavy if refine else None)
            fit_model.fit(**inputs, epochs=settings.epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                          verbose=verbose)
            del inputs  # a cached run's memory maps: phase 2 needs the memory
            callback_state = watcher_counters(watchers)
        else:  # killed after phase 1's last commit: nothing left to train in it
            callback_state = {key: state[key] for key in watchers}
        train_seconds = checkpoint.train_seconds
        if settings.fine_tune_epochs:  # model.keras: fine-tuning's last epoch
            train_seconds = _fine_tune(model, settings, history, callback_state, state if fine_tuning else None,
                                       split, stats, seed, steps_per_epoch, strategy, write_dir, train_seconds,
                                       verbose, log)
            best_epoch = len(history["epoch"])
        else:  # model.keras holds EarlyStopping's best epoch, or (cosine, linear) the last one.
            best_epoch = (callback_state["early_stopping"]["best_epoch"] + 1
                          if "early_stopping" in callback_state else len(history["epoch"]))
        config.update({"finished": now(), "train_seconds": train_seconds,
                       "epochs_completed": len(history["epoch"]), "best_epoch": best_epoch,
                       "model_epoch": "best by val_loss" if watchers and not settings.fine_tune_epochs
                       else "last (weight average)" if average else "last",
                       "callbacks": callback_state, "status": "complete"})
        rundir.write_json(os.path.join(write_dir, rundir.HISTORY_FILE), history)
        rundir.write_json(os.path.join(write_dir, rundir.CONFIG_FILE), config)
        # Only after config.json says complete: a kill before this line leaves a resumable run.
        shutil.rmtree(os.path.join(write_dir, CHECKPOINT_DIR), ignore_errors=True)
    finally:
        keras.mixed_precision.set_global_policy(old_policy)
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)

    _print_summary(model_name, history, config, run_dir, log)
    return history


def _cached_head(model, settings, split, stats, initial_epoch, cache_dir, config, write_dir, log):
    """Phase 1 on the frozen base's cached features: (the head model to fit, its fit() arguments).

    The head shares its layers (and the optimizer) with `model`, so training it trains
    `model`, and the per-epoch checkpoints of `model` hold the head's optimizer state.
    """
    import features  # only cached runs need it

    x_train, y_train, x_valid, y_valid = split
    cache_dir = os.path.abspath(cache_dir or features.default_cache_dir())
    # Recorded before the build, which takes hours on a CPU: a run killed during it and
    # resumed without --cache-dir builds (and later finds) its cache in the same place.
    config["features"] = {"cache_dir": cache_dir}
    rundir.write_json(os.path.join(write_dir, rundir.CONFIG_FILE), config)
    cache, folder, built = features.load_or_build(
        models.feature_extractor(model),
        {"train": x_train, "train_mirror": x_train[:, :, ::-1], **({"valid": x_valid} if len(x_valid) else {})},
        lambda images: data.standardize(images, stats), cache_dir, settings.batch_size, log)
    meta = rundir.read_json(os.path.join(folder, features.META_FILE), "the feature cache's description")
    config["features"].update({"cache": folder, "bytes": meta["bytes"], "build_seconds": meta["build_seconds"],
                               "built_by_this_run": built, "dtype": meta["dtype"]})
    rundir.write_json(os.path.join(write_dir, rundir.CONFIG_FILE), config)
    head = models.head_model(model)
    head.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"],
                 steps_per_execution=settings.steps_per_execution)
    labels_train, labels_valid = data.one_hot(y_train), data.one_hot(y_valid)
    # The run's seed and the epoch, not the session's seed: a resumed run draws the order
    # and flips of the epochs it would have had.
    return head, {
        "x": features.CachedFeatures(cache["train"], labels_train, settings.batch_size,
                                     mirrors=cache["train_mirror"], shuffle=True, seed=settings.seed,
                                     epoch=initial_epoch),
        **({"validation_data": features.CachedFeatures(cache["valid"], labels_valid, settings.batch_size)}
           if len(x_valid) else {})}


def head_weights(model, head, weights):
    """The head's share of `weights` (a get_weights() of the whole model), for EarlyStopping.

    A resumed cached run restores the whole model's best weights, while EarlyStopping
    watches (and at the end restores) the head's.
    """
    current = model.get_weights()
    model.set_weights(weights)
    share = head.get_weights()
    model.set_weights(current)
    return share


def _fine_tune(model, settings, history, callback_state, state, split, stats, seed, steps_per_epoch, strategy,
               write_dir, seconds_before, verbose, log):
    """Phase 2: the base's fine_tune_blocks unfrozen, a constant small learning rate, augmented images.

    Runs the epochs after phase 1's (EarlyStopping may have ended it early) up to
    fine_tune_epochs more; `state` is the checkpoint when resumed inside phase 2 (the
    model is then already unfrozen and compiled). Returns the run's training seconds.
    """
    first = history["phase"].count(1)
    last = first + settings.fine_tune_epochs
    if state is None:  # phase 2 starts now
        if "early_stopping" in callback_state:  # from phase 1's best epoch, which model.keras holds
            rundir.load_weights(model, os.path.join(write_dir, rundir.MODEL_FILE), "phase 1's best model")
        with strategy.scope():
            opened = models.unfreeze(model, fine_tune_blocks(settings))
            compile_model(model, fine_tune_settings(settings), steps_per_epoch)
        epochs = f"epoch {last}" if last == first + 1 else f"epochs {first + 1}-{last}"
        log(f"{PROG}: fine-tuning {epochs}: {', '.join(opened)} unfrozen "
            f"({models.count_parameters(model)[1]:,} trainable parameters), learning rate "
            f"{settings.fine_tune_learning_rate:g}, augmentation {settings.augmentation}")
    checkpoint = RunFolderCheckpoint(write_dir, {}, history, last, state=state, seconds_before=seconds_before,
                                     log=log, phase=2, frozen_state=callback_state)
    initial = len(history["epoch"])
    if initial < last:
        inputs = make_inputs(settings, *split, stats, seed, initial)
        model.fit(**inputs, epochs=last, initial_epoch=initial, verbose=verbose,
                  callbacks=[StopOnNonFiniteLoss(write_dir, settings.fine_tune_learning_rate,
                                                        "--fine-tune-learning-rate"), checkpoint])
    return checkpoint.train_seconds


def _print_summary(model_name, history, config, run_dir, log):
    epochs = len(history["epoch"])
    if not epochs:
        log(f"{PROG}: {model_name}: no epoch trained; run folder {run_dir}")
        return
    best = config["best_epoch"] - 1
    seconds = config["train_seconds"]
    head_epochs = history.get("phase", [1] * epochs).count(1)  # fine-tuning epochs come after --epochs
    reason = ("early stopping" if head_epochs < config["settings"]["epochs"] else "epoch limit")
    which = {"last": "model.keras: last epoch", "last (weight average)": "model.keras: the weights' average at "
             "epoch"}.get(config.get("model_epoch"), "best epoch")
    cache = config.get("features") or {}
    building = (f" (and {cache['build_seconds']:.1f} s building the feature cache)"
                if cache.get("built_by_this_run") else "")
    log(f"{PROG}: {model_name} done: {epochs} epoch{'' if epochs == 1 else 's'} in {seconds:.1f} s{building} "
        f"({float(np.mean(history['epoch_seconds'])):.1f} s/epoch), stopped by {reason}; {which} {best + 1}"
        + (f": val_loss {history['val_loss'][best]:.4f}, val_accuracy {100 * history['val_accuracy'][best]:.2f} %"
           if history["val_loss"][best] is not None else "") + f"; run folder {run_dir}")


# --- Command line ------------------------------------------------------------------

_METAVARS = {int: "N", float: "X", str: "VALUE"}
# --help's sections: every Settings field in one of them (tests/test_train.py checks).
OPTION_GROUPS = {
    "recipe and budget": ("recipe", "epochs", "batch_size", "validation_split", "limit", "seed"),
    "optimizer and schedule": ("optimizer", "learning_rate", "momentum", "weight_decay", "classifier_lr_scale",
                               "schedule", "warmup_fraction", "min_lr", "lr_factor", "lr_patience", "lr_min_delta",
                               "stop_patience", "stop_min_delta", "ema_momentum", "ema_every", "swa_epochs"),
    "augmentation and regularization": ("augmentation", "crop_padding", "cutout", "policy", "erasing", "mixing",
                                        "mixing_alpha", "refine_epochs", "augment_validation", "label_smoothing",
                                        "dropout_scale"),
    "the network": ("init", "bn_momentum"),
    "the pretrained network (vgg16_pretrained)": PRETRAINED_ONLY,
    "run folder and devices": ("precision", "steps_per_execution", "distribute", "deterministic", "tensorboard"),
}


def build_parser():
    parser = rundir.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one of the report's networks (Gomez Cruz 2025) into a resumable run folder:\n"
        "model.keras, stats.json, config.json, history.json.\n\nRecipes (--recipe NAME; a flag still "
        "overrides any value; docs/recipes.md):\n" + "\n".join(
            f"  {name:<9} {RECIPE_PURPOSES[name]} ({', '.join(RECIPES[name])})" for name in RECIPES),
        epilog="Validation is on clean images by default (the paper augmented them: --augment-validation).\n"
        "A killed run continues with --resume from its last completed epoch. Every flag: docs/training.md.")
    parser.add_argument("model", metavar="MODEL", help=f"one of {', '.join(models.MODELS)}")
    fields = {field.name: field for field in dataclasses.fields(Settings)}
    groups = {title: parser.add_argument_group(title) for title in OPTION_GROUPS}
    for title, names in OPTION_GROUPS.items():
        for name in names:
            field, flag = fields[name], "--" + name.replace("_", "-")
            about = field.metadata["about"]
            if "default:" not in about:
                about += f" (default: {field.default})"
            if field.type is bool:  # --flag / --no-flag, so that a recipe's True can be turned off
                groups[title].add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=about)
            else:
                metavar = "{" + ",".join(RECIPES) + "}" if name == "recipe" else _METAVARS.get(field.type)
                groups[title].add_argument(flag, type=field.type, default=None,
                                           choices=field.metadata.get("choices"),
                                           metavar=None if "choices" in field.metadata else metavar, help=about)
    pretrained, run = groups["the pretrained network (vgg16_pretrained)"], groups["run folder and devices"]
    pretrained.add_argument("--cache-dir", metavar="DIR", help="where --cache-features keeps the frozen base's "
                            "features, one folder per weights and images (default: $CIFAR10_FEATURE_CACHE, "
                            "else ~/.cache/cifar10_keras/features; on --resume, the run's own)")
    data.add_data_dir_argument(run, "on --resume, default the run's own")
    run.add_argument("--run-dir", help="the run folder (default: runs/MODEL)")
    run.add_argument("--resume", action="store_true", help="continue the run in the run folder after "
                     "its last completed epoch, with its saved settings")
    run.add_argument("--overwrite", action="store_true", help="replace a run already in the run folder")
    run.add_argument("--cpu-devices", type=int, metavar="N", help="split the CPU into N logical "
                     "devices, to try --distribute mirrored on a machine without GPUs")
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends like Ctrl-C: the last completed epoch is already saved


@rundir.one_line_errors(PROG)
def main(argv=None):
    args = build_parser().parse_args(argv)
    run_dir = args.run_dir or os.path.join("runs", args.model)
    previous_handler = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.model not in models.MODELS:
            raise UserError(f"unknown model '{args.model}'; choose one of {', '.join(models.MODELS)}")
        if args.cpu_devices is not None:
            if args.cpu_devices < 1:
                raise UserError(f"--cpu-devices must be >= 1, received {args.cpu_devices}")
            split_cpu(args.cpu_devices)  # before anything initializes TensorFlow's devices
        explicit = {field.name: getattr(args, field.name) for field in dataclasses.fields(Settings)
                    if getattr(args, field.name) is not None}
        for name in PRETRAINED_ONLY:
            if name in explicit and args.model != "vgg16_pretrained":
                raise UserError(f"--{name.replace('_', '-')} applies to vgg16_pretrained only, not {args.model}")
        if args.cache_dir is not None and args.model != "vgg16_pretrained":
            raise UserError(f"--cache-dir applies to vgg16_pretrained with --cache-features only, not {args.model}")
        use_saved = args.resume and os.path.isfile(os.path.join(run_dir, rundir.CONFIG_FILE))
        base = (load_settings(run_dir) if use_saved
                else recipe_settings(explicit.get("recipe", "paper"), args.model))
        settings = dataclasses.replace(base, **explicit)
        check_flags_used(settings, explicit)
        if args.cache_dir is not None and not settings.cache_features:
            raise UserError("--cache-dir is not used without --cache-features (recipe "
                            f"{settings.recipe}); it applies to --cache-features")
        train(args.model, settings, run_dir, data_dir=args.data_dir, resume=args.resume,
              overwrite=args.overwrite, cache_dir=args.cache_dir)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; completed epochs are saved, continue with: "
              f"python train.py {args.model} --resume --run-dir {run_dir}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())

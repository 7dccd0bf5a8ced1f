"""How a run is kept and continued: the run folder's opening (--resume, --overwrite, the lock),
the per-epoch commit, the restore of a killed run, and the stop of a diverged one.

    config, created, lock = checkpoint.open_run_dir(run_dir, resume=False, overwrite=False)
    callbacks = [checkpoint.StopOnNonFiniteLoss(run_dir, 5e-4), *watchers.values(),
                 checkpoint.RunFolderCheckpoint(run_dir, watchers, history, total_epochs)]

After every epoch the run folder's checkpoint/ gets the model with its optimizer state
(checkpoint/epoch_NNNN.keras) and then, as the commit, state.json with the callbacks'
counters and the history. Keras' BackupAndRestore keeps only the weights and the epoch
number: ReduceLROnPlateau and EarlyStopping would restart their patience and forget the
best val_loss and best weights. checkpoint/ is deleted once the run is complete.

The epoch before the last committed one stays whole beside it (its checkpoint, its
state, the best model as it stood then), so a damaged newest checkpoint costs one epoch
on --resume, not the run. A commit first checks that its folder has room for what it
writes; a write that fails is one line saying so, and leaves the last commit resumable.
"""
import datetime
import json
import math
import os
import re
import shutil
import tempfile
import time

import rundir  # first: it quiets TensorFlow's C++ start-up logging before TF loads
from rundir import UserError

import keras
import numpy as np

import data

PROG = "train.py"  # the command whose run folders these are: its messages carry its name
CHECKPOINT_DIR = "checkpoint"  # inside the run folder; removed when the run completes
STATE_FILE = "state.json"  # inside CHECKPOINT_DIR: the commit record of the last completed epoch
AVERAGE_SUFFIX = ".average.npz"  # inside CHECKPOINT_DIR, beside its epoch: the weights' average (--ema-momentum)
EPOCH_STATE_SUFFIX = ".state.json"  # inside CHECKPOINT_DIR, beside its epoch: that epoch's commit record
BEST_SUFFIX = ".best.keras"  # beside its epoch: model.keras as it stood then, kept when the next epoch replaces it
TENSORBOARD_DIR = "tensorboard"
# What --overwrite deletes: the files our scripts write into a run folder, nothing else.
RUN_FILES = (rundir.MODEL_FILE, rundir.STATS_FILE, rundir.CONFIG_FILE, rundir.HISTORY_FILE,
             rundir.METRICS_FILE)
RUN_FOLDERS = (CHECKPOINT_DIR, TENSORBOARD_DIR)
HISTORY_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                "epoch_seconds", "phase")  # phase: 1, or 2 for vgg16_pretrained's fine-tuning epochs
# --- The run folder -----------------------------------------------------------------

def now():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _is_run_folder(run_dir):
    return any(os.path.exists(os.path.join(run_dir, name)) for name in RUN_FILES + RUN_FOLDERS)


def _remove_stale_temporaries(folder):
    """Delete the temporary files an atomic write killed mid-way leaves (.model.keras.XXXX.keras)."""
    if not os.path.isdir(folder):
        return
    names = RUN_FILES + (STATE_FILE, "epoch_")
    for entry in os.listdir(folder):
        if entry.startswith(".") and any(entry.startswith(f".{name}") for name in names):
            os.remove(os.path.join(folder, entry))


def open_run_dir(run_dir, resume, overwrite):
    """Check the run folder against --resume/--overwrite, make sure it can be written, lock it.

    Returns (config of the run to resume or None, whether this call created the folder,
    the held rundir.RunLock). A folder that another live train.py holds is refused
    before anything in it is touched.
    """
    config = None
    replace = False
    if resume:
        if not os.path.isfile(os.path.join(run_dir, rundir.CONFIG_FILE)):
            raise UserError(f"--resume: no run to resume in '{run_dir}' (it holds no {rundir.CONFIG_FILE})")
        config = rundir.read_json(os.path.join(run_dir, rundir.CONFIG_FILE), "the run's settings")
        if config.get("status") == "complete":
            raise UserError(f"--resume: the run in '{run_dir}' is already complete "
                            f"({config.get('epochs_completed')} epochs); nothing to resume "
                            "(--overwrite trains it again)")
    elif os.path.isdir(run_dir) and set(os.listdir(run_dir)) - {rundir.LOCK_FILE}:
        if not _is_run_folder(run_dir):
            raise UserError(f"run folder '{run_dir}' is not empty and holds no run; choose another --run-dir")
        if not overwrite:
            raise UserError(f"run folder '{run_dir}' already holds a run; --resume continues it, "
                            "--overwrite replaces it")
        replace = True
    created = not os.path.exists(run_dir)
    try:
        os.makedirs(run_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as error:
        raise UserError(f"run folder '{run_dir}' cannot be written ({error.strerror or error})") from None
    try:
        lock = rundir.RunLock(run_dir).acquire()
    except UserError:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if replace:  # only now: the files may belong to a live run until the lock is ours
        for name in RUN_FILES:
            if os.path.exists(os.path.join(run_dir, name)):
                with rundir.writing(os.path.join(run_dir, name)):
                    os.remove(os.path.join(run_dir, name))
        for name in RUN_FOLDERS:
            shutil.rmtree(os.path.join(run_dir, name), ignore_errors=True)
    _remove_stale_temporaries(run_dir)
    _remove_stale_temporaries(os.path.join(run_dir, CHECKPOINT_DIR))
    return config, created, lock


def _epoch_number(entry):
    """The epoch a checkpoint/ entry belongs to (epoch_0003.keras, epoch_0003.state.json: 3), else None."""
    match = re.fullmatch(r"epoch_(\d+)\..+", entry)
    return int(match.group(1)) if match else None


def _whole_state(folder, path):
    """The state in `path`, once it and the files it names are whole; a UserError naming what is not."""
    state = rundir.read_json(path, "the resume state")
    if not (isinstance(state.get("epoch"), int) and isinstance(state.get("checkpoint"), str)
            and isinstance(state.get("history"), dict)):
        raise UserError(f"{path}: not the resume state of an epoch (it names no epoch, checkpoint and history)")
    rundir.check_archive(os.path.join(folder, state["checkpoint"]), f"the checkpoint of epoch {state['epoch']}")
    if state.get("average") is not None:
        rundir.check_archive(os.path.join(folder, state["average"]), f"the weights' average of epoch {state['epoch']}",
                             kind=".npz file", members=())
    return state


def _read_quietly(path):
    """The JSON object in `path`, or None where it is missing or damaged."""
    try:
        return rundir.read_json(path, "the resume state")
    except UserError:
        return None


def read_checkpoint(run_dir, fall_back=False, log=print):
    """The committed state of the last completed epoch, or None when no epoch completed.

    The state and the files it names are checked whole first. With `fall_back`, a damaged
    last epoch gives way to the newest whole one before it (each commit keeps the epoch
    before), told in one line through `log`; without it, or with none kept, the damage
    is a UserError naming the file.
    """
    folder = os.path.join(run_dir, CHECKPOINT_DIR)
    path = os.path.join(folder, STATE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        return _whole_state(folder, path)
    except UserError as error:
        if not fall_back:
            raise
        problem = error
    newest = _read_quietly(path)
    below = newest.get("epoch") if newest is not None else None
    kept = sorted(((_epoch_number(entry), entry) for entry in os.listdir(folder)
                   if entry.endswith(EPOCH_STATE_SUFFIX) and _epoch_number(entry) is not None), reverse=True)
    for number, entry in kept:
        if isinstance(below, int) and number >= below:
            continue
        try:
            state = _whole_state(folder, os.path.join(folder, entry))
        except UserError:
            continue
        log(f"{PROG}: {problem}; going back to epoch {state['epoch']}, the last one kept whole, "
            "and training on from there")
        return state
    raise UserError(f"{problem}; no earlier epoch is kept to go back to, so the run cannot be resumed: "
                    "start it again with --overwrite")


def _roll_back(folder, state):
    """After a fall-back: state.json is `state` again, and the files of later epochs go."""
    path = os.path.join(folder, STATE_FILE)
    newest = _read_quietly(path)
    if newest is not None and newest.get("epoch") == state["epoch"]:
        return
    for entry in os.listdir(folder):
        number = _epoch_number(entry)
        if number is not None and number > state["epoch"]:
            with rundir.writing(os.path.join(folder, entry)):
                os.remove(os.path.join(folder, entry))
    rundir.write_json(path, state)


def _keep(source, target):
    """`target` gets `source`'s bytes: a hard link where the file system has them (no space, no time), else a copy."""
    with rundir.atomic_path(target) as tmp:
        os.remove(tmp)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def _variable_bytes(variables):
    def itemsize(dtype):
        bits = re.findall(r"\d+", str(dtype))  # "float32", "bfloat16", "int64"; "bool" is a byte
        return int(bits[-1]) // 8 if bits else 1
    return sum(int(np.prod(variable.shape)) * itemsize(variable.dtype) for variable in variables)


# A .keras file beyond its arrays' bytes: HDF5's headers and the model's config (alexnet's 23.31 MB
# of arrays made a 23.40 MB file); the margin covers both with room to spare.
ARCHIVE_FACTOR, ARCHIVE_EXTRA = 1.02, 256 * 1024


def saved_bytes(model):
    """About the bytes model.save writes: the model's and its optimizer's variables, and the archive's rest."""
    variables = list(model.variables)
    if getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    return int(_variable_bytes(variables) * ARCHIVE_FACTOR) + ARCHIVE_EXTRA


# --- The per-epoch commit and its restore ----------------------------------------------

class RunFolderCheckpoint(keras.callbacks.Callback):
    """Commits every completed epoch to the run folder; on resume, restores the callbacks' state.

    Placed after ReduceLROnPlateau and EarlyStopping (when the schedule has them) in the
    callback list, so that it sees their end-of-epoch decisions (a cut learning rate, a
    new best) and, at the start of fit, overwrites the reset their on_train_begin does
    with the saved counters.

    Per epoch N, in this order: the files of epochs before N-1 are deleted; the folder's
    free space is checked against what the commit writes (saved_bytes); checkpoint/epoch_NNNN.keras
    (model + optimizer state, so a per-step schedule resumes at its step) and, with
    --ema-momentum, the weights' average beside it (epoch_NNNN.average.npz); its state
    (epoch_NNNN.state.json); when model.keras is about to be replaced while epoch N-1's
    restore would read it, model.keras as it stands, as epoch_{N-1}.best.keras;
    checkpoint/state.json, the commit (counters, history, seconds); model.keras if this
    epoch is the best by val_loss (plateau) or every epoch (cosine, linear: the last is
    the model; with an average, the average); history.json. Every write is atomic, so a
    kill at any point leaves the last committed epoch whole, and epoch N-1 stays whole
    beside it for read_checkpoint's fall-back. After the first epoch of a session it logs
    the pace and what the run's remaining epochs will take.
    """

    def __init__(self, write_dir, watchers, history, total_epochs, state=None, best_weights=None,
                 seconds_before=0.0, log=print, phase=1, frozen_state=None, average=None):
        super().__init__()
        self.average = average  # an averaging.WeightAverage: saved beside each checkpoint, and model.keras
        self.saved_model = None  # what is saved, when not the model being fit (a cached run's head)
        self.phase = phase  # recorded in history.json and state.json
        self.frozen_state = frozen_state or {}  # phase 1's counters, kept in phase 2's commits
        self.write_dir = write_dir
        self.watchers = watchers  # {"reduce_lr": callback, "early_stopping": callback}, or {}
        self.history = history
        self.total_epochs = total_epochs
        self.state = state
        self.best_weights = best_weights
        self.seconds_before = seconds_before
        self.train_seconds = seconds_before
        self.log = log
        self.epochs_this_session = 0
        self.committed = None  # the state of the last committed epoch, once known
        self.checkpoint_bytes = None  # the size of the last checkpoint written

    def on_train_begin(self, logs=None):
        if self.state is not None:
            for key, callback in self.watchers.items():
                for attribute, value in self.state[key].items():
                    setattr(callback, attribute, value)
            if "early_stopping" in self.watchers:
                self.watchers["early_stopping"].best_weights = self.best_weights
        folder = os.path.join(self.write_dir, CHECKPOINT_DIR)
        # Fine-tuning's first commit follows phase 1's last, which only state.json holds.
        self.committed = self.state if self.state is not None else _read_quietly(os.path.join(folder, STATE_FILE))
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:  # fit builds it at its first step; its size counts now
            optimizer.build(self.model.trainable_variables)
        self.check_space("each epoch's commit (its checkpoint and model.keras)", rewrite_model=True)
        self.session_start = time.perf_counter()

    def check_space(self, what, rewrite_model):
        """A SpaceError unless the run folder has room for a commit, before any of it is written."""
        model = self.saved_model or self.model
        checkpoint_bytes = max(saved_bytes(model), self.checkpoint_bytes or 0)
        need = checkpoint_bytes * (2 if rewrite_model else 1)
        if self.average is not None:  # the average: a copy of the weights
            need += int(_variable_bytes(model.variables) * ARCHIVE_FACTOR) + ARCHIVE_EXTRA
        need += 3 * (len(json.dumps(self.history)) + 4096)  # two states and history.json
        rundir.check_free_space(self.write_dir, need, what, prefix="run folder ")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds = time.perf_counter() - self.epoch_start
        record = {"epoch": epoch + 1, "learning_rate": self.epoch_learning_rate, "epoch_seconds": seconds,
                  "phase": self.phase}
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            record[key] = float(logs[key]) if key in logs else None
        for key in HISTORY_KEYS:
            self.history[key].append(record[key])
        self.train_seconds = self.seconds_before + time.perf_counter() - self.session_start
        self.commit(epoch)
        self.epochs_this_session += 1
        self.last_epoch_seconds = seconds

    def on_epoch_begin(self, epoch, logs=None):
        # After the session's first epoch (here, so it follows Keras' line for that epoch).
        if self.epochs_this_session == 1:
            self.log(eta_line(self.last_epoch_seconds, epoch, self.total_epochs, "early_stopping" in self.watchers))
        self.epoch_start = time.perf_counter()
        self.epoch_learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def is_best(self, epoch):
        """Whether model.keras is rewritten after `epoch` (0-based)."""
        stopping = self.watchers.get("early_stopping")
        return stopping is None or stopping.best_epoch == epoch

    def commit(self, epoch):
        folder = os.path.join(self.write_dir, CHECKPOINT_DIR)
        number = epoch + 1
        with rundir.writing(folder):
            if not os.path.isdir(folder):
                os.mkdir(folder)  # not makedirs: a run folder deleted under the run is told, not made again
            for entry in os.listdir(folder):  # keep epoch N-1 whole until N's commit is done
                if _epoch_number(entry) not in (None, number - 1, number):
                    os.remove(os.path.join(folder, entry))
        rewrite_model = self.is_best(epoch)
        self.check_space(f"the commit of epoch {number} (its checkpoint"
                         + (" and model.keras)" if rewrite_model else ")"), rewrite_model)
        name = f"epoch_{number:04d}.keras"
        model = self.saved_model or self.model
        rundir.save_model(model, os.path.join(folder, name))
        self.checkpoint_bytes = os.path.getsize(os.path.join(folder, name))
        average = None
        if self.average is not None:  # the trained weights are in the checkpoint; their average beside them
            average = f"epoch_{number:04d}{AVERAGE_SUFFIX}"
            with rundir.atomic_path(os.path.join(folder, average)) as tmp:
                self.average.save(tmp)
        state = {
            "epoch": number,  # completed epochs; fit resumes with initial_epoch = this
            "checkpoint": name,
            **({"average": average} if average else {}),
            "phase": self.phase,
            **self.frozen_state,
            **watcher_counters(self.watchers),
            "stopped": bool(self.model.stop_training),
            "train_seconds": self.train_seconds,
            "history": self.history,
        }
        rundir.write_json(os.path.join(folder, f"epoch_{number:04d}{EPOCH_STATE_SUFFIX}"), state)
        best = os.path.join(self.write_dir, rundir.MODEL_FILE)
        if rewrite_model and _restore_reads_model_file(self.committed) and os.path.isfile(best):
            _keep(best, os.path.join(folder, f"epoch_{self.committed['epoch']:04d}{BEST_SUFFIX}"))
        rundir.write_json(os.path.join(folder, STATE_FILE), state)
        self.committed = state
        if rewrite_model:
            if self.average is not None:  # the model is the average, as validation saw it
                with self.average.swapped():
                    rundir.save_model(model, best)
            else:
                rundir.save_model(model, best)
        rundir.write_json(os.path.join(self.write_dir, rundir.HISTORY_FILE), self.history)


def _restore_reads_model_file(state):
    """Whether restore(state) takes the best weights from model.keras (an earlier epoch was the best)."""
    return (state is not None and "early_stopping" in state and state.get("phase", 1) != 2
            and state["early_stopping"]["best_epoch"] != state["epoch"] - 1)


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite: the run stops with the last finite epoch kept."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Ends fit at the first batch whose running training loss is NaN or infinite.

    Keras' TerminateOnNaN only sets stop_training, so the epoch would still finish and be
    committed (a model.keras of NaN weights, status complete, exit 0). Raising instead
    leaves the run folder at its last committed epoch: RunFolderCheckpoint never sees
    the diverged one. The running mean Keras logs turns non-finite with the first bad
    batch and stays so, so the first step it shows is the step that diverged.
    """

    def __init__(self, run_dir, learning_rate, flag="--learning-rate"):
        super().__init__()
        self.run_dir = run_dir
        self.learning_rate = learning_rate
        self.flag = flag  # the setting to lower: fine-tuning has its own
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            kept = (f"epoch {self.epoch} is the last one kept" if self.epoch
                    else "no epoch was completed")
            raise TrainingDiverged(
                f"training diverged in epoch {self.epoch + 1}, step {batch + 1}: loss {float(loss)}; "
                f"{kept} in {self.run_dir}; try a lower {self.flag} than {self.learning_rate:g} "
                "in a new run (or --overwrite this one)")


def _duration(seconds):
    """Seconds in words a user reads at a glance: 48 s, 12.5 min, 7.9 h, 2.1 days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def eta_line(epoch_seconds, epochs_done, total_epochs, may_stop_early=False):
    """The pace after an epoch, and what the run's remaining epochs take at that pace."""
    remaining = total_epochs - epochs_done
    finish = datetime.datetime.now() + datetime.timedelta(seconds=remaining * epoch_seconds)
    return (f"{PROG}: epoch {epochs_done} took {_duration(epoch_seconds)}; at this pace the run's "
            f"{total_epochs} epochs take {_duration(total_epochs * epoch_seconds)} in all, "
            f"the {remaining} left about {_duration(remaining * epoch_seconds)} "
            f"(until {finish:%Y-%m-%d %H:%M}"
            + (", sooner if early stopping ends it)" if may_stop_early else ")"))


def _plain(value):
    """A callback's `best` (None, a float or a 0-d tensor) as a JSON number or None."""
    return None if value is None else float(keras.ops.convert_to_numpy(value))


def session_seed(seed, initial_epoch):
    """The seed of this session: the run's own at the start, a derived one after a resume."""
    if initial_epoch == 0:
        return seed
    return int(np.random.SeedSequence([seed, initial_epoch]).generate_state(1)[0] % 2**31)


# The counters ReduceLROnPlateau and EarlyStopping keep, as Keras names them (best_epoch 0-based).
_CALLBACK_COUNTERS = {"reduce_lr": ("best", "wait", "cooldown_counter"),
                      "early_stopping": ("best", "wait", "best_epoch")}


def watcher_counters(watchers):
    """The watchers' counters as JSON-ready numbers ({} for a schedule without watchers)."""
    return {key: {name: _plain(getattr(callback, name)) if name == "best" else getattr(callback, name)
                  for name in _CALLBACK_COUNTERS[key]}
            for key, callback in watchers.items()}


def restore(model, run_dir, write_dir, state, strategy, average=None):
    """Load the last committed epoch (weights + optimizer) into `model`; return the best weights.

    With `average` (an averaging.WeightAverage), the average committed beside the
    checkpoint is loaded into it, and model.keras is written from it. After a fall-back
    to an earlier epoch (read_checkpoint), state.json is rolled back to it and model.keras
    rewritten as it stood then.
    """
    folder = os.path.join(run_dir, CHECKPOINT_DIR)
    checkpoint = os.path.join(folder, state["checkpoint"])
    what = f"the checkpoint of epoch {state['epoch']}"
    best = os.path.join(run_dir, rundir.MODEL_FILE)
    kept = os.path.join(folder, f"epoch_{state['epoch']:04d}{BEST_SUFFIX}")
    if write_dir == run_dir:  # a worker that is not the chief leaves the run folder alone
        _roll_back(folder, state)
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)  # its slots must exist to receive the state
        if "early_stopping" not in state or state.get("phase") == 2:  # model.keras is the last epoch
            rundir.load_weights(model, checkpoint, what)
            if average is None:
                rundir.save_model(model, os.path.join(write_dir, rundir.MODEL_FILE))
                return None
            if "average" not in state:
                raise UserError(f"{os.path.join(run_dir, CHECKPOINT_DIR, STATE_FILE)}: names no weight average; "
                                "the run cannot be resumed with --ema-momentum")
            average.set_model(model)
            path = os.path.join(run_dir, CHECKPOINT_DIR, state["average"])
            try:
                average.load(path)
            except ValueError as error:
                raise UserError(f"{path}: {error}; the checkpoint cannot be resumed") from None
            with average.swapped():  # a kill may have come before model.keras was rewritten
                rundir.save_model(model, os.path.join(write_dir, rundir.MODEL_FILE))
            return None
        if state["early_stopping"]["best_epoch"] == state["epoch"] - 1:
            # The last committed epoch is the best one; a kill may have come before model.keras was
            # rewritten, so write it again from the checkpoint.
            rundir.load_weights(model, checkpoint, what)
            rundir.save_model(model, os.path.join(write_dir, rundir.MODEL_FILE))
        elif os.path.isfile(kept):  # model.keras may hold a later epoch, dropped by a fall-back
            rundir.load_weights(model, kept, f"the best model as of epoch {state['epoch']}")
            if write_dir == run_dir:
                _keep(kept, best)
        elif os.path.isfile(best):
            rundir.load_weights(model, best, "EarlyStopping's best weights")
        else:
            raise UserError(f"{best}: missing; EarlyStopping's best weights cannot be restored")
        best_weights = model.get_weights()
        rundir.load_weights(model, checkpoint, what)
    return best_weights


def check_same_data(run_dir, stats):
    """A resumed run must see the images it started on: compare the standardization statistics."""
    saved = data.load_stats(os.path.join(run_dir, rundir.STATS_FILE))
    if saved.get("pixels") != stats["pixels"] or not all(
            math.isclose(saved[key], stats[key], rel_tol=1e-9) for key in ("mean", "std")):
        raise UserError(f"--resume: the training images differ from the ones '{run_dir}' started on "
                        f"(mean {stats['mean']:.6f}, saved {saved['mean']:.6f}); pass the same --data-dir")

"""Faults at the files the scripts write and read: each is one line and exit status 2, and a run resumes.

A failed write (a full disk, no permission, a read-only or vanished folder) is injected at
the rename that would have committed the file, after the whole temporary file was written
(the atomic write's last step), or by making the folder's free space look short. A
damaged file is cut in half or replaced by other bytes. Every case checks the line, the
exit status, that no traceback is shown, and what is left: the run folder resumes from
its last complete epoch, or from the one before a damaged checkpoint.
"""
import contextlib
import errno
import json
import os
import shutil

import keras
import pytest

import checkpoint
import evaluate
import plots
import predict_image
import results
import rundir
import train
from cifar_fixtures import make_images

TINY = ["--limit", "64", "--batch-size", "32", "--augmentation", "none", "--seed", "0", "--precision", "float32"]


def refused(capsys, main, argv, *words):
    """main(argv) ends with one line on stderr holding `words`, exit status 2, no traceback."""
    with pytest.raises(SystemExit) as raised:
        main(argv)
    err = capsys.readouterr().err
    assert raised.value.code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


@contextlib.contextmanager
def failing_write(name, code, succeed=0):
    """Writes of files called `name` fail with OSError `code` after `succeed` of them succeeded."""
    replace = os.replace
    done = []

    def fail_then_replace(source, target, *args, **kwargs):
        if os.path.basename(target) == name:
            if len(done) >= succeed:
                raise OSError(code, os.strerror(code), source)
            done.append(target)
        return replace(source, target, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", fail_then_replace)
        yield


def stop_after_commit(patch, epochs):
    """Ctrl-C right after the commit of epoch `epochs` (0: before the first commit of the session)."""
    commit = checkpoint.RunFolderCheckpoint.commit

    def commit_then_stop(self, epoch):
        if epochs == 0:
            raise KeyboardInterrupt
        commit(self, epoch)
        if epoch + 1 == epochs:
            raise KeyboardInterrupt
    patch.setattr(checkpoint.RunFolderCheckpoint, "commit", commit_then_stop)


def read(*path):
    with open(os.path.join(*path)) as handle:
        return json.load(handle)


def cut(path, keep=0.5):
    """Truncate the file at `path` to `keep` of its bytes, as a disk that filled up or a copy cut short."""
    with open(path, "rb") as handle:
        payload = handle.read()
    with open(path, "wb") as handle:
        handle.write(payload[:int(len(payload) * keep)])


def committed_epoch(run):
    return read(run, checkpoint.CHECKPOINT_DIR, checkpoint.STATE_FILE)["epoch"]


def check_left_whole(run):
    """The lock is free, no temporary file is left, and every JSON file of the run parses."""
    rundir.RunLock(run).acquire().release()
    folders = [run] + [os.path.join(run, checkpoint.CHECKPOINT_DIR)] * os.path.isdir(
        os.path.join(run, checkpoint.CHECKPOINT_DIR))
    for folder in folders:
        assert not [name for name in os.listdir(folder) if name.startswith(".") and name != rundir.LOCK_FILE]
        for name in os.listdir(folder):
            if name.endswith(".json"):
                read(folder, name)


# --- Writes ------------------------------------------------------------------------

@contextlib.contextmanager
def short_of_space(room):
    """The run folder's disk looks nearly full after `room` checks of its free space."""
    asked = []

    def free_bytes(folder):
        asked.append(folder)
        return 10**12 if len(asked) <= room else 1000

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rundir, "free_bytes", free_bytes)
        yield


def test_a_failed_write_at_each_point_of_a_run_is_one_line_and_the_run_resumes(cifar_dir, tmp_path, capsys):
    """One alexnet run (cosine schedule: model.keras every epoch) through each fault in turn: too little
    space at the start and before a commit, then a failed write of each of its files. Each session
    ends in one line, the folder keeps its last commit, and the next --resume goes on from there."""
    run = str(tmp_path / "run")
    start = ["alexnet", "--recipe", "short", "--data-dir", cifar_dir, "--run-dir", run, "--epochs", "2", *TINY]
    resume = ["alexnet", "--resume", "--run-dir", run]
    then = f"then continue with: python train.py alexnet --resume --run-dir {run}"
    # (argv, the fault, the words of the line, the epoch the run folder keeps)
    steps = [
        (start, short_of_space(0), f"run folder '{run}' has 0.00 MB free and each epoch's commit (its checkpoint "
         f"and model.keras) needs", 0),
        (resume, failing_write("epoch_0002.keras", errno.ENOSPC), "epoch_0002.keras: cannot be written (no space "
         "left on the device); free some space", 1),
        (resume, short_of_space(1), "free and the commit of epoch 2 (its checkpoint and model.keras) needs", 1),
        (resume, failing_write(rundir.CONFIG_FILE, errno.EACCES), "config.json: cannot be written (permission "
         "denied); make the folder writable", 1),
        (resume, failing_write(checkpoint.STATE_FILE, errno.EROFS), "state.json: cannot be written (read-only file "
         "system); make it writable", 1),
        # The resume writes history.json once before fit; its commit's is the second.
        (resume, failing_write(rundir.HISTORY_FILE, errno.ENOSPC, succeed=1), "history.json: cannot be written", 2),
        (resume, failing_write(rundir.MODEL_FILE, errno.EDQUOT), "model.keras: cannot be written (disk quota "
         "exceeded)", 2),
        (resume, failing_write(rundir.STATS_FILE, errno.ENOENT), "stats.json: cannot be written (its folder does "
         "not exist); create the folder", 2),
    ]
    for argv, fault, words, kept in steps:
        config = open(os.path.join(run, rundir.CONFIG_FILE), "rb").read() if argv is resume else None
        with fault:
            refused(capsys, train.main, argv, words, f", {then} " + (f"(it goes on after epoch {kept})" if kept
                                                                    else "(no epoch was completed)"))
        check_left_whole(run)
        assert read(run, rundir.CONFIG_FILE)["status"] == "running"
        if kept:
            assert committed_epoch(run) == kept
            epochs = read(run, rundir.HISTORY_FILE)["epoch"]  # one behind when its own write failed
            assert epochs == list(range(1, len(epochs) + 1)) and kept - 1 <= len(epochs) <= kept
        else:
            assert not os.path.exists(os.path.join(run, checkpoint.CHECKPOINT_DIR))
        if "config.json: cannot" in words:
            assert open(os.path.join(run, rundir.CONFIG_FILE), "rb").read() == config  # as it was
    assert train.main(resume) == 0
    history = read(run, rundir.HISTORY_FILE)
    assert history["epoch"] == [1, 2] and len(history["loss"]) == 2  # each epoch once
    assert read(run, rundir.CONFIG_FILE)["status"] == "complete"
    keras.saving.load_model(os.path.join(run, rundir.MODEL_FILE))
    assert not os.path.exists(os.path.join(run, checkpoint.CHECKPOINT_DIR))


def test_a_failed_write_at_bench_or_any_json_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "report.json")
    rundir.write_json(path, {"old": 1})
    for code, words in ((errno.ENOSPC, "no space left on the device); free some space, then run it again"),
                        (errno.EACCES, "permission denied); make the folder writable"),
                        (errno.EROFS, "read-only file system); make it writable")):
        with failing_write("report.json", code), pytest.raises(rundir.WriteError) as raised:
            rundir.write_json(path, {"new": 2})
        assert str(raised.value).startswith(f"{path}: cannot be written ({words}")
        assert read(path) == {"old": 1} and os.listdir(tmp_path) == ["report.json"]
    with pytest.raises(rundir.WriteError, match=r"its folder does not exist\); create the folder"):
        rundir.write_json(str(tmp_path / "gone" / "report.json"), {})


def test_a_failed_write_of_metrics_figures_or_a_record_is_one_line(trained_vgg16, run_copy, cifar_dir, tmp_path,
                                                                   capsys):
    run = run_copy(trained_vgg16)
    with failing_write(rundir.METRICS_FILE, errno.ENOSPC):
        refused(capsys, evaluate.main, [run, "--data-dir", cifar_dir, "--limit", "40"],
                f"{os.path.join(run, rundir.METRICS_FILE)}: cannot be written (no space left on the device)")
    assert not os.path.exists(os.path.join(run, rundir.METRICS_FILE))
    out = str(tmp_path / "figures")
    with failing_write("accuracy.png", errno.EACCES):
        refused(capsys, plots.main, [run, "--out", out], "accuracy.png: cannot be written (permission denied)")
    x_test, y_test = make_images(64, seed=4)
    evaluate.evaluate_run(run, x_test, y_test, batch_size=32)
    records = str(tmp_path / "results")
    with failing_write(rundir.HISTORY_FILE, errno.ENOSPC):
        refused(capsys, results.main, ["--results-dir", records, "collect", run],
                "history.json: cannot be written (no space left on the device)")
    assert os.listdir(records) == []  # no half record, no staging folder


@contextlib.contextmanager
def read_only(folder):
    """Nothing can be made, opened for writing or renamed under `folder`, as on a read-only file system.

    Tests may run as root, whom a chmod does not stop, so the calls that would reach the
    disk are refused instead, with the error a read-only mount gives.
    """
    folder = os.path.abspath(folder)

    def guard(function, writes=lambda *args, **kwargs: True):
        def guarded(path, *args, **kwargs):
            where = os.path.abspath(os.fspath(path))
            if (where == folder or where.startswith(folder + os.sep)) and writes(*args, **kwargs):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
            return function(path, *args, **kwargs)
        return guarded

    with pytest.MonkeyPatch.context() as patch:
        for name in ("mkdir", "rename", "replace"):
            patch.setattr(os, name, guard(getattr(os, name)))
        patch.setattr(os, "open", guard(os.open, lambda flags, *args, **kwargs: flags & (
            os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
        yield


def test_figures_or_a_record_into_a_read_only_folder_are_one_line(trained_vgg16, run_copy, tmp_path, capsys):
    run = run_copy(trained_vgg16)
    x_test, y_test = make_images(64, seed=4)
    evaluate.evaluate_run(run, x_test, y_test, batch_size=32)
    disk = tmp_path / "disk"
    records = disk / "results"
    records.mkdir(parents=True)
    read_only_line = "cannot be written (read-only file system); make it writable, then run it again"
    with read_only(disk):
        out = str(disk / "figures")  # not there yet: plots.py would make it
        refused(capsys, plots.main, [run, "--out", out], f"{os.path.join(out, 'accuracy.png')}: {read_only_line}")
        refused(capsys, results.main, ["--results-dir", str(records), "collect", run],
                f"{records / 'run'}: {read_only_line}")
        missing = disk / "new_results"
        refused(capsys, results.main, ["--results-dir", str(missing), "collect", run],
                f"{missing / 'run'}: {read_only_line}")
    assert os.listdir(disk) == ["results"] and os.listdir(records) == []


def test_a_collect_that_fails_midway_keeps_the_old_record_and_leaves_nothing(trained_vgg16, run_copy, tmp_path,
                                                                             capsys):
    """--overwrite --with-model over a record, each write of it failing in turn: the inference model's
    stats.json, the record folder's permissions, its rename into place (after the old one was set aside)."""
    run = run_copy(trained_vgg16)
    x_test, y_test = make_images(64, seed=4)
    evaluate.evaluate_run(run, x_test, y_test, batch_size=32)
    records = str(tmp_path / "results")
    record = os.path.join(records, "run")
    assert results.main(["--results-dir", records, "collect", run]) == 0
    capsys.readouterr()
    old = {file: open(os.path.join(record, file), "rb").read() for file in os.listdir(record)}
    faults = [
        (shutil, "copyfile", errno.ENOSPC, "no space left on the device); free some space",
         lambda source, target, **kwargs: True),
        (os, "chmod", errno.EPERM, "permission denied); make the folder writable",
         lambda path, *args, **kwargs: os.path.isdir(path)),
        (os, "rename", errno.EACCES, "permission denied); make the folder writable",
         lambda source, target, *args, **kwargs: target == record),
    ]
    for module, name, code, words, when in faults:
        function, failed = getattr(module, name), []

        def fail_once_when(*args, **kwargs):
            if when(*args, **kwargs) and not failed:
                failed.append(args[0])
                raise OSError(code, os.strerror(code), args[0])
            return function(*args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(module, name, fail_once_when)
            refused(capsys, results.main, ["--results-dir", records, "collect", "--overwrite", "--with-model", run],
                    f"{record}: cannot be written ({words}, then run it again")
        assert failed and os.listdir(records) == ["run"], name  # no staging folder, no old record set aside
        assert {file: open(os.path.join(record, file), "rb").read() for file in os.listdir(record)} == old, name


# --- Reads -------------------------------------------------------------------------

def test_a_damaged_last_checkpoint_costs_one_epoch(cifar_dir, tmp_path, capsys, monkeypatch):
    """A plateau run stopped after its last epoch's commit, that checkpoint then cut short: --resume
    goes back to epoch 2 with the best model as it stood then (epoch 1's, kept when epoch 3 replaced
    model.keras), rolls state.json and history.json back, and trains epoch 3 again."""
    run = str(tmp_path / "run")
    argv = ["vgg16", "--data-dir", cifar_dir, "--run-dir", run, "--epochs", "3", *TINY]
    resume = ["vgg16", "--resume", "--run-dir", run]
    verdicts = iter([True, False, True])  # EarlyStopping's: epochs 1 and 3 improve, 2 does not
    monkeypatch.setattr(keras.callbacks.EarlyStopping, "_is_improvement", lambda self, value, best: next(verdicts))
    stop_after_commit(monkeypatch, 3)
    assert train.main(argv) == 130
    monkeypatch.undo()
    capsys.readouterr()
    folder = os.path.join(run, checkpoint.CHECKPOINT_DIR)
    assert sorted(os.listdir(folder)) == ["epoch_0002.best.keras", "epoch_0002.keras", "epoch_0002.state.json",
                                          "epoch_0003.keras", "epoch_0003.state.json", "state.json"]
    best_then = open(os.path.join(folder, "epoch_0002.best.keras"), "rb").read()
    cut(os.path.join(folder, "epoch_0003.keras"))
    damaged = f"{os.path.join(folder, 'epoch_0003.keras')}: damaged or truncated .keras file (the checkpoint of epoch 3)"

    with pytest.raises(rundir.UserError, match="damaged or truncated .keras file"):
        checkpoint.read_checkpoint(run)  # what results.py collect --unfinished reads: no fall-back there
    both = shutil.copytree(run, str(tmp_path / "both"))
    cut(os.path.join(both, checkpoint.CHECKPOINT_DIR, "epoch_0002.keras"))
    refused(capsys, train.main, ["vgg16", "--resume", "--run-dir", both], "epoch_0003.keras: damaged or truncated",
            "no earlier epoch is kept to go back to, so the run cannot be resumed: start it again with --overwrite")

    seen = {}
    begin = checkpoint.RunFolderCheckpoint.on_train_begin

    def look_then_begin(self, logs=None):  # the run folder as the fall-back left it, before epoch 3 again
        seen.update(epoch=committed_epoch(run), history=read(run, rundir.HISTORY_FILE)["epoch"],
                    model=open(os.path.join(run, rundir.MODEL_FILE), "rb").read(), files=sorted(os.listdir(folder)))
        begin(self, logs)
    monkeypatch.setattr(checkpoint.RunFolderCheckpoint, "on_train_begin", look_then_begin)
    assert train.main(resume) == 0
    out = capsys.readouterr().out
    assert f"train.py: {damaged}; going back to epoch 2, the last one kept whole, and training on from there" in out
    assert seen["epoch"] == 2 and seen["history"] == [1, 2] and seen["model"] == best_then
    assert not [name for name in seen["files"] if name.startswith("epoch_0003")]
    assert read(run, rundir.HISTORY_FILE)["epoch"] == [1, 2, 3]
    assert read(run, rundir.CONFIG_FILE)["status"] == "complete"


def test_a_damaged_checkpoint_of_the_only_epoch_is_refused(cifar_dir, tmp_path, capsys, monkeypatch):
    run = str(tmp_path / "run")
    stop_after_commit(monkeypatch, 1)
    assert train.main(["vgg16", "--data-dir", cifar_dir, "--run-dir", run, "--epochs", "2", *TINY]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    resume = ["vgg16", "--resume", "--run-dir", run]
    folder = os.path.join(run, checkpoint.CHECKPOINT_DIR)

    # A damaged state.json: the copy beside its epoch is whole, so nothing is lost.
    state = read(folder, checkpoint.STATE_FILE)
    with open(os.path.join(folder, checkpoint.STATE_FILE), "w") as handle:
        handle.write('{"epoch": 1, "checkp')
    lines = []
    assert checkpoint.read_checkpoint(run, fall_back=True, log=lines.append) == state
    assert len(lines) == 1 and "state.json: damaged or truncated JSON (the resume state)" in lines[0]
    assert "going back to epoch 1" in lines[0]
    rundir.write_json(os.path.join(folder, checkpoint.STATE_FILE), state)

    for name, words in ((rundir.CONFIG_FILE, "config.json: damaged or truncated JSON (the run's settings)"),
                        (rundir.STATS_FILE, "stats.json: damaged or truncated JSON (the standardization statistics")):
        kept = open(os.path.join(run, name), "rb").read()
        cut(os.path.join(run, name))
        refused(capsys, train.main, resume, words)
        with open(os.path.join(run, name), "wb") as handle:
            handle.write(kept)
    saved = open(os.path.join(run, rundir.CONFIG_FILE), "rb").read()
    with open(os.path.join(run, rundir.CONFIG_FILE), "w") as handle:
        handle.write('["a list, not the settings"]')
    refused(capsys, train.main, resume, "config.json: not the run's settings: a JSON list where an object was expected")
    with open(os.path.join(run, rundir.CONFIG_FILE), "wb") as handle:
        handle.write(saved)

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])  # a whole .keras file, of another model
    other.save(os.path.join(folder, "epoch_0001.keras"))
    refused(capsys, train.main, resume, "epoch_0001.keras: does not fit the vgg16 model (the checkpoint of epoch 1)")

    cut(os.path.join(folder, "epoch_0001.keras"))
    refused(capsys, train.main, resume, "epoch_0001.keras: damaged or truncated .keras file (the checkpoint of "
            "epoch 1); no earlier epoch is kept to go back to")


@pytest.mark.parametrize("name, damage, words", [
    (rundir.MODEL_FILE, "cut", "model.keras: damaged or truncated .keras file (the run's model)"),
    (rundir.MODEL_FILE, "other", "model.keras: not a .keras file, or damaged at its start (the run's model)"),
    (rundir.STATS_FILE, "cut", "stats.json: damaged or truncated JSON (the standardization statistics of the run)"),
    (rundir.CONFIG_FILE, "cut", "config.json: damaged or truncated JSON"),
])
def test_evaluate_and_predict_name_a_damaged_file(trained_vgg16, run_copy, cifar_dir, tmp_path, capsys, name, damage,
                                                  words):
    run = run_copy(trained_vgg16)
    if damage == "cut":
        cut(os.path.join(run, name))
    else:
        with open(os.path.join(run, name), "wb") as handle:
            handle.write(b"\x89PNG\r\n\x1a\n not a model")
    image = str(tmp_path / "cat.png")
    from PIL import Image
    Image.new("RGB", (32, 32), (200, 120, 40)).save(image)
    refused(capsys, evaluate.main, [run, "--data-dir", cifar_dir, "--limit", "40"], words)
    refused(capsys, predict_image.main, [run, image], words)


def test_plots_and_results_name_a_damaged_history_or_record(trained_vgg16, run_copy, tmp_path, capsys):
    run = run_copy(trained_vgg16)
    x_test, y_test = make_images(64, seed=4)
    evaluate.evaluate_run(run, x_test, y_test, batch_size=32)
    records = str(tmp_path / "results")
    assert results.main(["--results-dir", records, "collect", run]) == 0
    capsys.readouterr()
    cut(os.path.join(run, rundir.HISTORY_FILE))
    refused(capsys, plots.main, [run, "--out", str(tmp_path / "figures")],
            "history.json: damaged or truncated JSON (the per-epoch training history)")
    record = os.path.join(records, "run")
    cut(os.path.join(record, rundir.METRICS_FILE))
    refused(capsys, results.main, ["--results-dir", records, "table"], "metrics.json: damaged or truncated JSON")


def test_every_loader_of_a_damaged_model_says_so(trained_vgg16, run_copy):
    """models.load_model (evaluate.py, predict_image.py, results.py collect --with-model): the archive is
    checked first, so a damaged file is not Keras' misleading "File not found"."""
    import models
    run = run_copy(trained_vgg16)
    path = os.path.join(run, rundir.MODEL_FILE)
    cut(path)
    with pytest.raises(rundir.UserError) as raised:
        models.load_model(run)
    assert str(raised.value) == f"{path}: damaged or truncated .keras file (the run's model)"


@pytest.mark.parametrize("content, words", [
    (None, "missing (the standardization statistics of the run)"),
    ('{"mean": 120.7, "st', "damaged or truncated JSON (the standardization statistics of the run): "),
    ("[120.7, 64.1]", "not the standardization statistics of the run: a JSON list where an object was expected"),
    ('{"mean": 120.7}', "not the standardization statistics of the run: needs numbers 'mean' and 'std' "
     "(KeyError: 'std')"),
    ('{"mean": 120.7, "std": 0}', "unusable statistics mean=120.7, std=0.0"),
])
def test_load_stats_says_what_is_wrong(tmp_path, content, words):
    import data
    path = str(tmp_path / rundir.STATS_FILE)
    if content is not None:
        with open(path, "w") as handle:
            handle.write(content)
    with pytest.raises(data.DataError) as raised:
        data.load_stats(path)
    assert str(raised.value).startswith(f"{path}: {words}"), raised.value


@pytest.mark.parametrize("content, words", [
    (None, "missing (a model)"),
    (b"", "damaged or truncated .keras file (a model)"),
    (b"PK\x03\x04 then nothing", "damaged or truncated .keras file (a model)"),
    ("zip", "not a .keras file (a model): it holds no config.json"),
    ("folder", "a folder, not a file (a model)"),
])
def test_check_archive_says_what_is_wrong(tmp_path, content, words):
    path = str(tmp_path / "model.keras")
    if content == "zip":
        import zipfile
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("something.txt", "else")
    elif content == "folder":
        os.mkdir(path)
    elif content is not None:
        with open(path, "wb") as handle:
            handle.write(content)
    with pytest.raises(rundir.UserError) as raised:
        rundir.check_archive(path, "a model")
    assert str(raised.value) == f"{path}: {words}"

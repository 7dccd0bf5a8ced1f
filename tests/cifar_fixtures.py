"""Synthetic CIFAR-10 in the official on-disk layouts, for tests (never a download).

The images carry a class signal (a per-class colour and stripe pattern under noise), so
a few epochs of training on them visibly learn, and every layout holds the same pixels.
"""
import contextlib
import io
import os
import pickle
import shutil
import struct
import tarfile

import numpy as np
import pytest

TRAIN_NAMES = [f"data_batch_{i}" for i in range(1, 6)]


def make_images(count, seed=0):
    """(images uint8 (count, 32, 32, 3), labels int64 (count,)) with a learnable signal.

    Each class has its own colour and stripe spacing; the noise comes from a bank of
    256 noise images, which keeps a full-size set quick to make (about a second).
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=count)
    colours = np.linspace(40, 215, 10)
    templates = np.empty((10, 32, 32, 3), np.int16)
    for label in range(10):
        templates[label, ..., 0] = colours[label]
        templates[label, ..., 1] = colours[9 - label]
        templates[label, ..., 2] = 98 + 60 * (np.arange(32)[None, :] % (label + 2) == 0)
    bank = rng.integers(-40, 41, size=(256, 32, 32, 3), dtype=np.int16)
    images = templates[labels] + bank[rng.integers(0, 256, size=count)]
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def _rows(images):
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def _parts(images, labels, parts=5):
    edges = np.linspace(0, len(images), parts + 1).astype(int)
    return [(images[a:b], labels[a:b]) for a, b in zip(edges[:-1], edges[1:])]


def write_binary(folder, train, test):
    """Write the "binary version" (cifar-10-batches-bin layout) into `folder`."""
    os.makedirs(folder, exist_ok=True)
    for name, (images, labels) in zip(TRAIN_NAMES, _parts(*train)):
        _write_bin(os.path.join(folder, name + ".bin"), images, labels)
    _write_bin(os.path.join(folder, "test_batch.bin"), *test)
    return folder


def _write_bin(path, images, labels):
    rows = np.concatenate([labels.astype(np.uint8)[:, None], _rows(images)], axis=1)
    rows.tofile(path)


class _Python2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote the official batches.

    Bytes become py2 `str` records (SHORT_BINSTRING/BINSTRING) and numpy's
    reconstructor is named under numpy.core, numpy 1's name: the same opcodes and
    globals as the real download. (Python 3's own protocol 2 would spell bytes as
    `_codecs.encode` calls, which no official batch holds.)
    """

    def save_bytes_py2(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", "") or ""
        if module.startswith("numpy._core"):
            module = module.replace("numpy._core", "numpy.core")
            self.write(pickle.GLOBAL + module.encode() + b"\n" + (name or obj.__qualname__).encode() + b"\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes_py2


def batch_pickle(images, labels, style="py2"):
    """The bytes of one python-version batch.

    style "py2": as the official files hold them (numpy.core names, py2 strings);
    "py3": as numpy 2 under Python 3 pickles it today (protocol 4, numpy._core names).
    """
    record = {b"batch_label": b"synthetic", b"labels": [int(v) for v in labels],
              b"data": _rows(images), b"filenames": [b"x.png"] * len(labels)}
    if style == "py3":
        return pickle.dumps(record, protocol=4)
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(record)
    return buffer.getvalue()


def write_python(folder, train, test):
    """Write the "python version" (cifar-10-batches-py layout) into `folder`."""
    os.makedirs(folder, exist_ok=True)
    for name, (images, labels) in zip(TRAIN_NAMES, _parts(*train)):
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(batch_pickle(images, labels))
    with open(os.path.join(folder, "test_batch"), "wb") as handle:
        handle.write(batch_pickle(*test))
    return folder


def write_tarball(path, train, test):
    """Write cifar-10-python.tar.gz as the official download packs it."""
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in list(zip(TRAIN_NAMES, [batch_pickle(*p) for p in _parts(*train)])) + [
                ("test_batch", batch_pickle(*test))]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


@contextlib.contextmanager
def copied_when_killed(run_dir, copy_dir, after_epoch=1):
    """Inside it, a train.py run in `run_dir` is copied to `copy_dir` right after epoch
    `after_epoch`'s commit, and goes on: the copy is the folder a SIGKILL at that moment leaves
    (its lock is the operating system's, held by no one in the copy). In-process, so one run is
    both the run left alone and the killed one; the kill itself is tested in a process of its own
    (test_train.py's mirrored run, test_transfer.py's killed_transfer_runs)."""
    import checkpoint
    commit = checkpoint.RunFolderCheckpoint.commit

    def commit_then_copy(self, epoch):
        commit(self, epoch)
        if epoch + 1 == after_epoch:
            shutil.copytree(run_dir, copy_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint.RunFolderCheckpoint, "commit", commit_then_copy)
        yield

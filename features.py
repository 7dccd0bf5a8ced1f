"""The frozen base's features of vgg16_pretrained, computed once, cached on disk as float16.

    cache, folder, built = features.load_or_build(extractor, {"train": ..., "train_mirror": ..., "valid": ...},
                                                  prepare, cache_dir, batch_size)
    head.fit(features.CachedFeatures(cache["train"], y_train, 64, mirrors=cache["train_mirror"]))

A frozen base computes the same output for the same image every epoch; the report's
vgg16_pretrained pushed every image through it (at 224x224) in each of its epochs. Here
its output for every training image, every training image's mirror (so that flip
augmentation still works) and every validation image is computed once, in batches, and
the head trains on that.

The cache is a folder `<cache dir>/<key>/` holding one raw float16 file per part and
meta.json. The key is a hash of the feature model's configuration (image size,
preprocessing, dtype policy), of its weights as loaded (so a changed weights file gives
another key) and of the images (so another --limit or data set does too): a cache is
reused only for exactly the same features. A folder is renamed into place only once
complete; a partial one is removed on an error or an interrupt, and one left by a killed
process (`<key>.partial-PID`, PID no longer running) by the next build in that folder.
Caches are never deleted for you: each is one folder, safe to delete when no run uses it.
"""
import errno
import hashlib
import json
import os
import shutil
import sys
import time

import rundir  # first: it quiets TensorFlow's C++ start-up logging before TF loads
from rundir import UserError

import keras
import numpy as np

CACHE_ENV = "CIFAR10_FEATURE_CACHE"  # overrides the default cache folder
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "cifar10_keras", "features")
FORMAT = 1  # bump when the layout below changes: old caches then get other keys
DTYPE = np.float16  # half the disk and memory of float32; batches are cast back to float32
META_FILE = "meta.json"


def default_cache_dir():
    """$CIFAR10_FEATURE_CACHE, else ~/.cache/cifar10_keras/features."""
    return os.path.expanduser(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def cache_key(extractor, parts):
    """A hex digest of what the features depend on: model config, its weights, the images."""
    digest = hashlib.sha256(f"format {FORMAT} {np.dtype(DTYPE).name}".encode())
    digest.update(json.dumps(_describe(extractor), sort_keys=True, default=str).encode())
    for weight in extractor.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    for name in sorted(parts):
        images = np.ascontiguousarray(parts[name])
        digest.update(f"{name} {images.shape} {images.dtype}".encode())
        digest.update(images.tobytes())
    return digest.hexdigest()[:24]


def _describe(model):
    """Each layer's class and configuration, recursively, without the names Keras numbers itself."""
    description = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            description.append([type(layer).__name__, _describe(layer)])
        elif not isinstance(layer, keras.layers.InputLayer):
            description.append([type(layer).__name__,
                                {key: value for key, value in layer.get_config().items() if key != "name"}])
    return description


def _load(folder, key, shapes):
    """The cached parts as read-only memory maps, or None if the folder is not exactly this cache."""
    try:
        meta = rundir.read_json(os.path.join(folder, META_FILE), "the feature cache's description")
        if meta.get("key") != key:
            return None
        cache = {}
        for name, shape in shapes.items():
            path = os.path.join(folder, f"{name}.f16")
            if tuple(meta["parts"][name]) != shape or os.path.getsize(path) != np.prod(shape) * 2:
                return None
            cache[name] = np.memmap(path, dtype=DTYPE, mode="r", shape=shape)
        return cache
    except (UserError, OSError, KeyError, TypeError):
        return None


def load_or_build(extractor, parts, prepare, cache_dir=None, batch_size=64, log=print):
    """The features of `parts` ({name: uint8 images}) by `extractor`, from the cache or computed.

    Args:
        extractor: models.feature_extractor(model), frozen.
        parts: {name: uint8 images (N, 32, 32, 3)}.
        prepare: maps a uint8 batch to the model's input (data.standardize with the run's stats).
        cache_dir: the folder holding caches (default: default_cache_dir()).
        batch_size: images per forward pass.
        log: where the build's size and time are told.

    Returns:
        ({name: float16 array (N, *feature shape)}, the cache folder, whether it was built now).

    Raises:
        UserError: the cache folder cannot be written, or the disk is (or gets) full; no
            partial cache is left.
    """
    cache_dir = cache_dir or default_cache_dir()
    key = cache_key(extractor, parts)
    folder = os.path.join(cache_dir, key)
    feature_shape = tuple(extractor.output_shape[1:])
    shapes = {name: (len(images),) + feature_shape for name, images in parts.items()}
    cached = _load(folder, key, shapes) if os.path.isdir(folder) else None
    if cached is not None:
        log(f"features  cached in {folder} ({_size(folder) / 1e9:.2f} GB), reused")
        return cached, folder, False
    if os.path.isdir(folder):  # not this cache after all (damaged or incomplete): never reused
        log(f"features  {folder} is damaged or incomplete; rebuilding it")
        shutil.rmtree(folder, ignore_errors=True)
    need = sum(int(np.prod(shape)) for shape in shapes.values()) * np.dtype(DTYPE).itemsize
    _remove_dead_partials(cache_dir, log)
    _build(extractor, parts, prepare, folder, key, shapes, need, batch_size, log)
    return _load(folder, key, shapes), folder, True


def _build(extractor, parts, prepare, folder, key, shapes, need, batch_size, log):
    parent = os.path.dirname(folder)
    partial = f"{folder}.partial-{os.getpid()}"
    try:
        os.makedirs(parent, exist_ok=True)
        rundir.check_free_space(parent, need, "the cache", "free some space or pass --cache-dir on another disk",
                                unit="GB", prefix="feature cache: ")
        log(f"features  computing the frozen base's output for {sum(len(p) for p in parts.values()):,} "
            f"images into {folder} ({need / 1e9:.2f} GB as float16)")
        start = time.perf_counter()
        os.makedirs(partial)
        # A live bar on a terminal; in a log file, one line at the end.
        progress = keras.utils.Progbar(sum(len(images) for images in parts.values()), unit_name="image",
                                       verbose=1 if sys.stdout.isatty() else 2)
        for name, images in parts.items():
            with open(os.path.join(partial, f"{name}.f16"), "wb") as handle:
                for first in range(0, len(images), batch_size):
                    batch = extractor.predict_on_batch(prepare(images[first:first + batch_size]))
                    handle.write(np.asarray(batch, dtype=DTYPE).tobytes())
                    progress.add(len(batch))
                handle.flush()
                os.fsync(handle.fileno())
        seconds = time.perf_counter() - start
        rundir.write_json(os.path.join(partial, META_FILE), {
            "key": key, "dtype": np.dtype(DTYPE).name, "parts": shapes, "bytes": need,
            "build_seconds": seconds, "model": extractor.name})
        try:
            os.replace(partial, folder)
        except OSError:  # another run finished the same cache first: keep theirs
            if _load(folder, key, shapes) is None:
                raise
        log(f"features  built in {seconds:.1f} s: {need / 1e9:.2f} GB in {folder}")
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise UserError(f"feature cache: the disk filled up while writing '{partial}' "
                            f"({need / 1e9:.2f} GB needed); the partial cache was removed, free some space "
                            "or pass --cache-dir on another disk") from None
        raise UserError(f"feature cache '{folder}' cannot be written "
                        f"({error.strerror or error}); pass --cache-dir") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _remove_dead_partials(cache_dir, log):
    """Delete the `.partial-PID` folders of builds whose process is gone (a SIGKILL, a power cut)."""
    if not os.path.isdir(cache_dir) or os.name == "nt":  # Windows' os.kill(pid, 0) would end the process
        return
    for entry in os.listdir(cache_dir):
        _, marker, pid = entry.rpartition(".partial-")
        if not marker or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
            continue  # a live build (another run): leave it
        except ProcessLookupError:
            pass
        except (PermissionError, OSError):  # exists under another user, or cannot tell: leave it
            continue
        log(f"features  removing {entry}, the partial cache of a build that was killed")
        shutil.rmtree(os.path.join(cache_dir, entry), ignore_errors=True)


def _size(folder):
    return sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))


class CachedFeatures(keras.utils.PyDataset):
    """Batches of (float32 features, labels) from the cache, for model.fit.

    With `mirrors`, each image is replaced by its mirror's features with probability
    1/2, drawn again every epoch: the flip augmentation of a cached run. The order (with
    shuffle) and the flips come from (seed, epoch), so a resumed run goes on with the
    epochs it would have had.
    """

    def __init__(self, features, labels, batch_size, mirrors=None, shuffle=False, seed=0, epoch=0):
        super().__init__()
        self.features, self.labels, self.mirrors = features, np.asarray(labels), mirrors
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, epoch
        self._draw()

    def _draw(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        count = len(self.labels)
        self.order = rng.permutation(count) if self.shuffle else np.arange(count)
        self.flip = rng.random(count) < 0.5 if self.mirrors is not None else None

    def __len__(self):
        return -(-len(self.labels) // self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        x = np.asarray(self.features[rows], dtype=np.float32)
        if self.flip is not None:
            flipped = self.flip[rows]
            x[flipped] = self.mirrors[rows[flipped]]
        return x, self.labels[rows]

    def on_epoch_end(self):
        self.epoch += 1
        self._draw()

"""CIFAR-10 loading, the paper's validation split, standardization and augmentation.

Everything the report does to the data before it reaches a model lives here
(Gomez Cruz 2025, sections 1-2), as importable functions:

    (x_train, y_train), (x_test, y_test) = load_cifar10("/data/cifar10")
    x_train, x_valid, y_train, y_valid = split_validation(x_train, y_train)
    stats = compute_stats(x_train)
    x_train = standardize(x_train, stats)

Offline, point `--data-dir` (or the CIFAR10_DATA_DIR environment variable) at one of
the official layouts: the "python version" folder `cifar-10-batches-py/` (or a folder
holding it), the `cifar-10-python.tar.gz` download itself, or the "binary version"
folder `cifar-10-batches-bin/`.

    python data.py --data-dir /data/cifar10
"""
import io
import os
import pickle
import sys
import tarfile

import numpy as np

import rundir
from rundir import UserError, write_json

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")  # CIFAR-10 label order
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SHAPE = (32, 32, 3)
PIXELS_PER_IMAGE = 32 * 32 * 3  # 3,072 bytes a record: R, G, B planes of 32x32
OFFICIAL_COUNTS = {"train": 50_000, "test": 10_000}  # images in the official release
DATA_DIR_ENV = "CIFAR10_DATA_DIR"  # environment variable read when no data_dir is given
PIXEL_INPUT = "pixels"  # stats.json "input" of a run whose model preprocesses its own 0-255 input

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
PYTHON_FOLDER = "cifar-10-batches-py"
BINARY_FOLDER = "cifar-10-batches-bin"
TARBALL = "cifar-10-python.tar.gz"

# The paper's split (section 1): train_test_split(test_size=0.1, random_state=0).
VALIDATION_FRACTION = 0.1
SPLIT_SEED = 0
# The paper's standardization (section 2.1): std = np.std(X_train) + 1e-7.
STD_EPSILON = 1e-7
# The paper's ImageDataGenerator (section 2.3), argument for argument.
PAPER_AUGMENTATION = dict(
    rotation_range=15,  # degrees
    width_shift_range=0.12,  # fraction of the width
    height_shift_range=0.12,  # fraction of the height
    horizontal_flip=True,
    zoom_range=0.1,  # zoom factor drawn from [0.9, 1.1]
    brightness_range=[0.9, 1.1],  # multiplicative brightness factor
    shear_range=10,  # degrees, counter-clockwise
    channel_shift_range=0.1,  # additive, in the units of the (standardized) input
)

OFFLINE_HELP = (f"pass --data-dir (or set {DATA_DIR_ENV}) to a folder holding "
                f"{PYTHON_FOLDER}/ or {BINARY_FOLDER}/, or to {TARBALL}")


class DataError(UserError):
    """Raised for data a user supplied that is missing, malformed or not CIFAR-10."""


# --- Reading the official layouts -------------------------------------------------

class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch and refuses anything else.

    Unpickling calls whatever the file names, so a crafted "batch" could run any
    command. The real batches name only numpy's array reconstructor, ndarray and dtype
    (as numpy.core under numpy 1, numpy._core under numpy 2); everything else is refused
    before it is looked up, so nothing in a hostile file runs.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise DataError(f"it names {module}.{name}, which a CIFAR-10 batch never holds; "
                            "refused without running it")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)


def _numpy_reconstruct():
    """numpy's array reconstructor, under whichever module name this numpy uses."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _unpickle_batch(handle, name):
    """Return the dict of one python-version batch read from an open binary file."""
    try:
        record = _BatchUnpickler(handle, encoding="bytes").load()
    except DataError as error:
        raise DataError(f"{name}: {error}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError, OverflowError) as error:
        raise DataError(f"{name}: not a readable CIFAR-10 batch (truncated or corrupt: "
                        f"{type(error).__name__}: {error})") from None
    return record


def _batch_arrays(record, name):
    """Check one unpickled batch and return (images uint8 (N,32,32,3), labels (N,))."""
    if not isinstance(record, dict):
        raise DataError(f"{name}: expected a dict with b'data' and b'labels', "
                        f"found {type(record).__name__}")
    data, labels = record.get(b"data"), record.get(b"labels")
    if data is None or labels is None:
        keys = ", ".join(repr(key) for key in list(record)[:6])
        raise DataError(f"{name}: no b'data' and b'labels' entries (keys: {keys})")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != PIXELS_PER_IMAGE:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DataError(f"{name}: b'data' must be a uint8 array of shape (N, {PIXELS_PER_IMAGE}), "
                        f"found {dtype} {shape}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{name}: b'labels' is not a list of integers") from None
    if len(labels) != len(data):
        raise DataError(f"{name}: {len(data)} images but {len(labels)} labels")
    return _to_images(data), labels


def _to_images(rows):
    """(N, 3072) rows of R, G, B planes -> (N, 32, 32, 3), as Keras' load_data does."""
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _read_python_folder(folder):
    def read(name):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise DataError(f"{path}: missing (the python version has {', '.join(TRAIN_BATCHES)}, {TEST_BATCH})")
        with open(path, "rb") as handle:
            return _batch_arrays(_unpickle_batch(handle, path), path)
    return [read(name) for name in TRAIN_BATCHES], read(TEST_BATCH)


def _read_tarball(path):
    """Read the official download without unpacking it next to the user's files."""
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError) as error:
        # tarfile's reason runs over several lines (one a compression tried): its first says it.
        reason = str(error).splitlines()[0].rstrip(": ") if str(error) else type(error).__name__
        raise DataError(f"{path}: not a readable tar.gz archive ({reason})") from None
    with tar:
        try:
            members = {os.path.basename(member.name): member
                       for member in tar.getmembers() if member.isfile()}
        except (tarfile.TarError, OSError, EOFError, ValueError) as error:
            raise DataError(f"{path}: archive is truncated or corrupt ({error})") from None

        def read(name):
            where = f"{path}:{name}"
            if name not in members:
                raise DataError(f"{path}: archive holds no {name}")
            try:
                payload = tar.extractfile(members[name]).read()
            except (tarfile.TarError, OSError, EOFError, ValueError) as error:
                raise DataError(f"{where}: truncated or corrupt ({error})") from None
            return _batch_arrays(_unpickle_batch(io.BytesIO(payload), where), where)
        return [read(name) for name in TRAIN_BATCHES], read(TEST_BATCH)


def _read_binary_folder(folder):
    record = 1 + PIXELS_PER_IMAGE  # one label byte, then the pixels

    def read(name):
        path = os.path.join(folder, name + ".bin")
        if not os.path.isfile(path):
            raise DataError(f"{path}: missing (the binary version has data_batch_1..5.bin, test_batch.bin)")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise DataError(f"{path}: {raw.size} bytes is not a whole number of "
                            f"{record}-byte records (truncated or not CIFAR-10)")
        rows = raw.reshape(-1, record)
        return _to_images(rows[:, 1:]), rows[:, 0].astype(np.int64)
    return [read(name) for name in TRAIN_BATCHES], read(TEST_BATCH)


def _find_layout(path):
    """Return (reader, location) for the official layout at or inside `path`."""
    if not os.path.exists(path):
        raise DataError(f"data path '{path}' does not exist")
    if os.path.isfile(path):
        return _read_tarball, path
    candidates = [
        (os.path.join(path, TRAIN_BATCHES[0]), _read_python_folder, path),
        (os.path.join(path, TRAIN_BATCHES[0] + ".bin"), _read_binary_folder, path),
        (os.path.join(path, PYTHON_FOLDER), _read_python_folder, os.path.join(path, PYTHON_FOLDER)),
        (os.path.join(path, BINARY_FOLDER), _read_binary_folder, os.path.join(path, BINARY_FOLDER)),
        (os.path.join(path, TARBALL), _read_tarball, os.path.join(path, TARBALL)),
    ]
    for marker, reader, location in candidates:
        if os.path.exists(marker):
            return reader, location
    raise DataError(f"data folder '{path}' holds no CIFAR-10: looked for {TRAIN_BATCHES[0]}, "
                    f"{TRAIN_BATCHES[0]}.bin, {PYTHON_FOLDER}/, {BINARY_FOLDER}/ and {TARBALL}")


def _check(images, labels, split, where, check_counts):
    if check_counts and len(images) != OFFICIAL_COUNTS[split]:
        raise DataError(f"{where}: {len(images):,} {split} images, expected "
                        f"{OFFICIAL_COUNTS[split]:,} (an incomplete or altered CIFAR-10)")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{where}: {split} labels run from {labels.min()} to {labels.max()}, "
                        f"expected 0-{NUM_CLASSES - 1}")


def load_cifar10(data_dir=None, check_counts=True):
    """Load CIFAR-10 as `keras.datasets.cifar10.load_data()` returns it.

    Args:
        data_dir: an official layout (see the module docstring). `None` reads the
            CIFAR10_DATA_DIR environment variable, and without it uses Keras' own
            download and cache.
        check_counts: require the official 50,000 training and 10,000 test images.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: uint8 images (N, 32, 32, 3) and uint8
        labels (N, 1).

    Raises:
        DataError: the data is missing, unreadable, refused or not CIFAR-10.
    """
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None:
        return _keras_download()
    data_dir = os.path.expanduser(str(data_dir))
    reader, location = _find_layout(data_dir)
    train_parts, (x_test, y_test) = reader(location)
    x_train = np.concatenate([images for images, _ in train_parts])
    y_train = np.concatenate([labels for _, labels in train_parts])
    _check(x_train, y_train, "train", location, check_counts)
    _check(x_test, y_test, "test", location, check_counts)
    return ((np.ascontiguousarray(x_train), y_train.astype(np.uint8).reshape(-1, 1)),
            (np.ascontiguousarray(x_test), y_test.astype(np.uint8).reshape(-1, 1)))


def _keras_download():
    import keras
    try:
        return keras.datasets.cifar10.load_data()
    except Exception as error:  # Keras wraps urllib's errors in a bare Exception.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"could not download CIFAR-10 through Keras ({reason}); offline, "
                        f"{OFFLINE_HELP}") from None


def describe_source(data_dir=None):
    """Where load_cifar10(data_dir) reads from, in words, for logs and config.json."""
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    return os.path.abspath(os.path.expanduser(data_dir)) if data_dir else "keras.datasets.cifar10"


# --- The paper's preprocessing ---------------------------------------------------

def split_validation(x, y, fraction=VALIDATION_FRACTION, seed=SPLIT_SEED):
    """The paper's split: `train_test_split(x, y, test_size=fraction, random_state=seed)`.

    Returns `x_train, x_valid, y_train, y_valid`, in scikit-learn's order; fraction 0: all
    images for training, in their order, and empty validation arrays.
    """
    if fraction == 0:
        return x, x[:0], y, y[:0]
    from sklearn.model_selection import train_test_split
    return train_test_split(x, y, test_size=fraction, random_state=seed)


def load_split(data_dir, limit=None, batch_size=1, fraction=VALIDATION_FRACTION):
    """The training split, cut to `limit` (the validation split to at most max(limit // 10, batch_size);
    fraction 0: empty): (x_train, y_train, x_valid, y_valid), uint8 images and integer labels, in
    train.py's order, not split_validation's."""
    (x_all, y_all), _ = load_cifar10(data_dir)
    x_train, x_valid, y_train, y_valid = split_validation(x_all, y_all, fraction)
    if limit is not None:
        valid_count = max(limit // 10, batch_size) if len(x_valid) else 0
        x_train, y_train = x_train[:limit], y_train[:limit]
        x_valid, y_valid = x_valid[:valid_count], y_valid[:valid_count]
    return x_train, y_train, x_valid, y_valid


def compute_stats(x_train):
    """One scalar mean and std over every pixel of the training split (paper 2.1).

    The std carries the paper's +1e-7. Computed in float64 (from a histogram for uint8
    images, which is exact and needs no float copy of the data set).
    """
    x_train = np.asarray(x_train)
    if x_train.size == 0:
        raise DataError("cannot compute statistics of an empty training split")
    if x_train.dtype == np.uint8:
        counts = np.bincount(x_train.reshape(-1), minlength=256).astype(np.float64)
        values = np.arange(256, dtype=np.float64)
        mean = float((counts * values).sum() / counts.sum())
        std = float(np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum()))
    else:
        mean = float(np.mean(x_train, dtype=np.float64))
        std = float(np.std(x_train, dtype=np.float64))
    return {"mean": mean, "std": std + STD_EPSILON, "epsilon": STD_EPSILON,
            "pixels": int(x_train.size)}


def standardization(stats):
    """The (mean, std) a run's inputs are standardized with: its own, or (0, 1) for pixels.

    A run whose model preprocesses its own input (vgg16_pretrained with ImageNet's
    preprocessing inside) has "input": "pixels" in stats.json: it takes 0-255 pixels, and
    the statistics are kept only as a record of the training images.
    """
    if stats.get("input") == PIXEL_INPUT:
        return 0.0, 1.0
    return stats["mean"], stats["std"]


def standardize(x, stats):
    """(x - mean) / std as float32, with the statistics of the training split (see standardization)."""
    mean, std = standardization(stats)
    return (np.asarray(x, dtype=np.float32) - np.float32(mean)) / np.float32(std)


def save_stats(stats, path):
    """Write the statistics as JSON, atomically (no half-written file on a crash)."""
    write_json(path, stats)


def load_stats(path):
    """Read statistics written by save_stats, checking that they are usable.

    A missing, unreadable or damaged file is a DataError worded as every run-folder file's
    (rundir.read_json), and so is one without a numeric mean and std.
    """
    what = "the standardization statistics of the run"
    try:
        stats = rundir.read_json(path, what)
    except UserError as error:
        raise DataError(str(error)) from None
    try:
        mean, std = float(stats["mean"]), float(stats["std"])
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not {what}: needs numbers 'mean' and 'std' ({type(error).__name__}: "
                        f"{error})") from None
    if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
        raise DataError(f"{path}: unusable statistics mean={mean}, std={std}")
    return stats


def one_hot(y):
    """Integer labels (N,) or (N, 1) -> float32 one-hot (N, 10), as the paper encodes."""
    import keras
    return keras.utils.to_categorical(np.asarray(y).reshape(-1), NUM_CLASSES).astype(np.float32)


def paper_generator():
    """The paper's ImageDataGenerator (section 2.3), the faithful augmentation path.

    In Keras 3 it survives only as `tensorflow.keras.preprocessing.image`: deprecated
    and single-threaded (one image at a time), but it is exactly what the paper ran.
    Apply it to standardized images, as the paper did.
    """
    from tensorflow.keras.preprocessing.image import ImageDataGenerator
    return ImageDataGenerator(**PAPER_AUGMENTATION)


# --- Command line ----------------------------------------------------------------

DATA_DIR_HELP = (f"an official CIFAR-10 layout: cifar-10-batches-py/, cifar-10-batches-bin/ or "
                 f"cifar-10-python.tar.gz (default: ${DATA_DIR_ENV}, else Keras' download)")


def add_data_dir_argument(parser, note=""):
    """The --data-dir option every script shares, its help text written once."""
    parser.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP + (f"; {note}" if note else ""))


@rundir.one_line_errors("data.py")
def main(argv=None):
    parser = rundir.ArgumentParser(
        prog="data.py", description="Load CIFAR-10, split it as the paper does and print "
        "the split shapes and the standardization statistics.")
    add_data_dir_argument(parser)
    args = parser.parse_args(argv)
    (x_train, y_train), (x_test, _) = load_cifar10(args.data_dir)
    x_train, x_valid, y_train, y_valid = split_validation(x_train, y_train)
    stats = compute_stats(x_train)
    print("Training: ", x_train.shape)
    print("Validation: ", x_valid.shape)
    print("Testing: ", x_test.shape)
    print(f"Mean: {stats['mean']:.4f}")
    print(f"Std: {stats['std']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

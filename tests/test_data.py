"""data.py: every official layout, refusal of hostile and broken files, the paper's preprocessing."""
import io
import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

import data
from cifar_fixtures import batch_pickle, make_images, write_binary, write_python, write_tarball

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def small():
    """A tiny train/test pair (the official structure, not the official counts)."""
    return make_images(100, seed=3), make_images(20, seed=4)


@pytest.fixture(scope="module")
def layouts(small, tmp_path_factory):
    """The same tiny data set in all three official layouts, plus a parent folder of each."""
    root = tmp_path_factory.mktemp("layouts")
    train, test = small
    paths = {
        "python": write_python(str(root / "py" / "cifar-10-batches-py"), train, test),
        "binary": write_binary(str(root / "bin" / "cifar-10-batches-bin"), train, test),
        "tarball": write_tarball(str(root / "cifar-10-python.tar.gz"), train, test),
    }
    paths["python_parent"] = str(root / "py")
    paths["binary_parent"] = str(root / "bin")
    return paths


@pytest.mark.parametrize("layout", ["python", "binary", "tarball", "python_parent", "binary_parent"])
def test_every_layout_loads_like_keras(layouts, small, layout):
    (x_train, y_train), (x_test, y_test) = data.load_cifar10(layouts[layout], check_counts=False)
    (train_images, train_labels), (test_images, test_labels) = small
    assert x_train.shape == (100, 32, 32, 3) and x_train.dtype == np.uint8
    assert y_train.shape == (100, 1) and y_train.dtype == np.uint8
    assert x_test.shape == (20, 32, 32, 3) and y_test.shape == (20, 1)
    np.testing.assert_array_equal(x_train, train_images)
    np.testing.assert_array_equal(y_train.ravel(), train_labels)
    np.testing.assert_array_equal(x_test, test_images)
    np.testing.assert_array_equal(y_test.ravel(), test_labels)


def test_tarball_is_read_without_unpacking(small, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the tarball was unpacked to disk")
    monkeypatch.setattr(tarfile.TarFile, "extract", refuse)
    monkeypatch.setattr(tarfile.TarFile, "extractall", refuse)
    path = write_tarball(str(tmp_path / "cifar-10-python.tar.gz"), *small)
    (x_train, _), _ = data.load_cifar10(path, check_counts=False)
    np.testing.assert_array_equal(x_train, small[0][0])
    assert os.listdir(tmp_path) == ["cifar-10-python.tar.gz"]  # nothing written beside it


def test_environment_variable_names_the_data(layouts, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, layouts["binary"])
    (x_train, _), _ = data.load_cifar10(check_counts=False)
    assert len(x_train) == 100


def test_full_size_set_passes_the_official_count_check(cifar_dir):
    (x_train, y_train), (x_test, y_test) = data.load_cifar10(cifar_dir)
    assert x_train.shape == (50_000, 32, 32, 3) and x_test.shape == (10_000, 32, 32, 3)
    written_images, written_labels = make_images(50_000, seed=1)  # what conftest.cifar_dir wrote
    np.testing.assert_array_equal(y_train.ravel(), written_labels)
    np.testing.assert_array_equal(x_train[-100:], written_images[-100:])  # the last batch file too


def test_incomplete_set_is_refused_by_default(layouts):
    with pytest.raises(data.DataError, match="100 train images, expected 50,000"):
        data.load_cifar10(layouts["binary"])


# --- hostile, truncated, malformed and missing data -------------------------------

class _RunsCommand:
    """Unpickling this calls os.system: what a hostile "batch" would do."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_hostile_pickle_is_refused_and_nothing_runs(layouts, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_python(str(folder), *make_images_pair())
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_3", "wb") as handle:
        pickle.dump({b"data": _RunsCommand(f"touch {marker}"), b"labels": [0]}, handle, protocol=4)
    with pytest.raises(data.DataError, match=r"data_batch_3: it names (posix|os)\.system.*refused"):
        data.load_cifar10(str(folder), check_counts=False)
    assert not marker.exists()


def test_hostile_pickle_inside_tarball_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_RunsCommand(f"touch {marker}"), protocol=2)
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(data.DataError, match="refused"):
        data.load_cifar10(str(path), check_counts=False)
    assert not marker.exists()


def test_a_file_that_is_no_archive_is_one_whole_line(tmp_path):
    path = tmp_path / "cifar.tar.gz"
    path.write_bytes(b"junk")
    with pytest.raises(data.DataError) as raised:
        data.load_cifar10(str(path))
    message = str(raised.value)
    assert message.startswith(f"{path}: not a readable tar.gz archive (") and message.endswith(")")
    assert "\n" not in message


def make_images_pair():
    return make_images(10, seed=5), make_images(5, seed=6)


def _half(content):
    return content[: len(content) // 2]


@pytest.mark.parametrize("write, damaged, cut, message", [
    (write_python, "cifar-10-batches-py/data_batch_2", _half,
     r"data_batch_2: not a readable CIFAR-10 batch \(truncated or corrupt"),
    (write_binary, "cifar-10-batches-bin/test_batch.bin", lambda content: content[:-100],
     r"test_batch.bin: .* not a whole number of 3073-byte records"),
    (write_tarball, "cifar-10-python.tar.gz", _half, "cifar-10-python.tar.gz"),
], ids=["python", "binary", "tarball"])
def test_a_truncated_file_is_named(tmp_path, write, damaged, cut, message):
    """Each layout with one of its files cut short: refused, with that file's name."""
    target = tmp_path / damaged.split("/")[0]
    write(str(target), *make_images_pair())
    path = tmp_path / damaged
    path.write_bytes(cut(path.read_bytes()))
    with pytest.raises(data.DataError, match=message):
        data.load_cifar10(str(target), check_counts=False)


@pytest.mark.parametrize("record, message", [
    ([1, 2, 3], "expected a dict"),
    ({b"labels": [0]}, "no b'data' and b'labels'"),
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"shape \(N, 3072\)"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "must be a uint8 array"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [b"a", b"b"]}, "not a list of integers"),
])
def test_malformed_python_batch(tmp_path, record, message):
    folder = tmp_path / "cifar-10-batches-py"
    write_python(str(folder), *make_images_pair())
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump(record, handle, protocol=4)
    with pytest.raises(data.DataError, match=message):
        data.load_cifar10(str(folder), check_counts=False)


def test_labels_outside_the_ten_classes(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    (train_images, train_labels), test = make_images_pair()
    write_python(str(folder), (train_images, train_labels + 10), test)
    with pytest.raises(data.DataError, match="labels run from 10 to"):
        data.load_cifar10(str(folder), check_counts=False)


def test_missing_batch_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_python(str(folder), *make_images_pair())
    os.remove(folder / "data_batch_5")
    with pytest.raises(data.DataError, match="data_batch_5: missing"):
        data.load_cifar10(str(folder), check_counts=False)


def test_missing_and_empty_data_folders(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_cifar10(str(tmp_path / "nowhere"))
    with pytest.raises(data.DataError, match="holds no CIFAR-10"):
        data.load_cifar10(str(tmp_path))


@pytest.mark.parametrize("style, names", [("py2", b"numpy.core.multiarray"), ("py3", b"numpy._core.multiarray")])
def test_numpy1_and_numpy2_module_names_are_accepted(tmp_path, style, names):
    """The official batches name numpy.core; batches pickled under numpy 2 name numpy._core."""
    folder = tmp_path / "cifar-10-batches-py"
    train, test = make_images_pair()
    write_python(str(folder), train, test)
    payload = batch_pickle(*test, style=style)
    assert names in payload
    (folder / "test_batch").write_bytes(payload)
    (_, _), (x_test, y_test) = data.load_cifar10(str(folder), check_counts=False)
    np.testing.assert_array_equal(x_test, test[0])
    np.testing.assert_array_equal(y_test.ravel(), test[1])


# --- the paper's preprocessing ------------------------------------------------------

def test_split_is_sklearns_train_test_split():
    images, labels = make_images(500, seed=7)
    labels = labels.reshape(-1, 1)
    ours = data.split_validation(images, labels)
    theirs = train_test_split(images, labels, test_size=0.1, random_state=0)
    assert [part.shape for part in ours] == [(450, 32, 32, 3), (50, 32, 32, 3), (450, 1), (50, 1)]
    for mine, reference in zip(ours, theirs):
        np.testing.assert_array_equal(mine, reference)
    x_train, x_valid, y_train, y_valid = data.split_validation(images, labels, fraction=0)  # all for training
    np.testing.assert_array_equal(x_train, images)
    np.testing.assert_array_equal(y_train, labels)
    assert x_valid.shape == (0, 32, 32, 3) and y_valid.shape == (0, 1)


@pytest.mark.parametrize("limit, count", [(None, 45_000), (64, 64)])
def test_stats_come_from_the_training_split_only(cifar_dir, limit, count):
    """What train.py computes its statistics from: sklearn's training part (cut to --limit), nothing else."""
    x_train, _, _, _ = data.load_split(cifar_dir, limit, batch_size=32)
    (x_all, y_all), _ = data.load_cifar10(cifar_dir)
    training_part = train_test_split(x_all, y_all, test_size=0.1, random_state=0)[0][:count]
    stats = data.compute_stats(x_train)
    assert stats == data.compute_stats(training_part)
    assert stats["pixels"] == count * 32 * 32 * 3


def test_standardization_is_the_papers():
    images, _ = make_images(300, seed=8)
    x_train, x_valid = images[:200], (images[200:] // 2)
    stats = data.compute_stats(x_train)
    as_float = x_train.astype(np.float64)
    assert stats["mean"] == pytest.approx(as_float.mean(), rel=1e-12)
    assert stats["std"] == pytest.approx(as_float.std() + 1e-7, rel=1e-12)
    standardized = data.standardize(x_train, stats)
    assert standardized.dtype == np.float32
    assert standardized.mean() == pytest.approx(0, abs=1e-4)
    assert standardized.std() == pytest.approx(1, abs=1e-4)
    validation = data.standardize(x_valid, stats)
    np.testing.assert_allclose(validation, (x_valid - stats["mean"]) / stats["std"], rtol=1e-5, atol=1e-5)


def test_stats_round_trip_through_json(tmp_path):
    stats = data.compute_stats(make_images(50, seed=9)[0])
    path = str(tmp_path / "stats.json")
    data.save_stats(stats, path)
    assert data.load_stats(path) == stats
    assert os.listdir(tmp_path) == ["stats.json"]  # no temporary file left behind


@pytest.mark.parametrize("content", ["", "{", '{"mean": 1}', '{"mean": 1, "std": 0}'])
def test_bad_stats_file(tmp_path, content):
    path = tmp_path / "stats.json"
    path.write_text(content)
    with pytest.raises(data.DataError, match="stats.json"):
        data.load_stats(str(path))


def test_one_hot():
    encoded = data.one_hot(np.array([[0], [3], [9]], np.uint8))
    assert encoded.shape == (3, 10) and encoded.dtype == np.float32
    np.testing.assert_array_equal(encoded.argmax(axis=1), [0, 3, 9])
    np.testing.assert_array_equal(encoded.sum(axis=1), [1, 1, 1])


# --- python data.py ------------------------------------------------------------------

def run_script(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "data.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_command_prints_the_papers_shapes(cifar_dir):
    result = run_script("--data-dir", cifar_dir)
    assert result.returncode == 0, result.stderr
    assert "Training:  (45000, 32, 32, 3)" in result.stdout
    assert "Validation:  (5000, 32, 32, 3)" in result.stdout
    assert "Testing:  (10000, 32, 32, 3)" in result.stdout
    assert "Mean: " in result.stdout and "Std: " in result.stdout


def test_command_on_bad_data_is_one_line(tmp_path):
    result = run_script("--data-dir", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("data.py: error: data path")

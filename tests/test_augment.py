"""The fast augmentation draws what the paper's ImageDataGenerator draws and transforms as it does."""
import numpy as np
import pytest

import augment
import data
import recipes
from tests.cifar_fixtures import make_images

DRAWS = 20_000  # transforms sampled for the distribution checks


@pytest.fixture(scope="module")
def sampled():
    return {key: value.numpy() for key, value in augment.sample_transforms(DRAWS, [7, 11]).items()}


@pytest.fixture(scope="module")
def paper_sampled():
    """The same number of draws from the paper's generator, as numpy arrays per key."""
    generator = data.paper_generator()
    np.random.seed(0)
    draws = [generator.get_random_transform((32, 32, 3)) for _ in range(4_000)]
    return {key: np.array([float(d[key]) for d in draws]) for key in augment.TRANSFORM_KEYS}


# key, low, high: the paper's ranges (data.PAPER_AUGMENTATION) in the units IDG draws them.
RANGES = [
    ("theta", -15, 15),  # degrees
    ("tx", -0.12 * 32, 0.12 * 32),  # pixels
    ("ty", -0.12 * 32, 0.12 * 32),  # pixels
    ("shear", -10, 10),  # degrees
    ("zx", 0.9, 1.1),
    ("zy", 0.9, 1.1),
    ("channel_shift_intensity", -0.1, 0.1),  # standardized units
    ("brightness", 0.9, 1.1),  # factor
]


@pytest.mark.parametrize("key, low, high", RANGES)
def test_each_parameter_is_uniform_over_the_papers_range(sampled, key, low, high):
    values = sampled[key]
    assert values.min() >= low - 1e-6 and values.max() <= high + 1e-6
    width = high - low
    # Spread over the whole range: both ends reached, and ten equal bins each hold a
    # tenth of the draws (a uniform's bin count has sd 0.2 % here; 1.5 % is > 7 sd).
    assert values.min() < low + 0.01 * width and values.max() > high - 0.01 * width
    counts, _ = np.histogram(values, bins=10, range=(low, high))
    np.testing.assert_allclose(counts / DRAWS, 0.1, atol=0.015)


def test_flip_rate_is_one_half(sampled):
    assert abs(sampled["flip_horizontal"].mean() - 0.5) < 0.02  # sd 0.0035
    assert sampled["flip_horizontal"].dtype == bool


def test_zoom_axes_are_drawn_independently_like_the_paper(sampled):
    assert abs(np.corrcoef(sampled["zx"], sampled["zy"])[0, 1]) < 0.05


@pytest.mark.parametrize("key, low, high", RANGES)
def test_distributions_match_the_paper_generator(sampled, paper_sampled, key, low, high):
    ours, paper = sampled[key], paper_sampled[key]
    width = high - low
    # Same range and same quantiles (4,000 IDG draws: a quantile's sd is < 1 % of the range).
    assert paper.min() >= low - 1e-6 and paper.max() <= high + 1e-6
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        assert abs(np.quantile(ours, q) - np.quantile(paper, q)) < 0.04 * width, q


def test_flip_rate_matches_the_paper_generator(sampled, paper_sampled):
    assert abs(sampled["flip_horizontal"].mean() - paper_sampled["flip_horizontal"].mean()) < 0.04


def _pattern():
    """A 32x32x3 image with a different value at every pixel and channel (standardized scale)."""
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    image = np.stack([rows * 0.1 - 1.6, cols * 0.07 - 1.1, np.sin(rows * 0.5) + np.cos(cols * 0.3)], axis=-1)
    return image.astype(np.float32)


def _one(**overrides):
    """Parameters of one identity transform, with `overrides`, as (1,) arrays."""
    params = {"theta": 0.0, "tx": 0.0, "ty": 0.0, "shear": 0.0, "zx": 1.0, "zy": 1.0,
              "flip_horizontal": False, "channel_shift_intensity": 0.0, "brightness": 1.0}
    params.update(overrides)
    return {key: np.array([value], dtype=bool if key == "flip_horizontal" else np.float32)
            for key, value in params.items()}


def test_identity_shift_and_flip_move_pixels_where_they_should():
    image = _pattern()
    apply = lambda **kw: augment.apply_transforms(image[None], _one(**kw)).numpy()[0]  # noqa: E731
    np.testing.assert_allclose(apply(), image, atol=1e-6)
    # IDG maps each output pixel to input + shift; its tx moves columns, ty rows, and
    # the edge is filled with the nearest pixel.
    np.testing.assert_allclose(apply(tx=3.0), image[:, np.minimum(np.arange(32) + 3, 31)], atol=1e-5)
    np.testing.assert_allclose(apply(ty=-2.0), image[np.maximum(np.arange(32) - 2, 0)], atol=1e-5)
    np.testing.assert_allclose(apply(flip_horizontal=True), image[:, ::-1], atol=1e-5)
    # A 90-degree rotation about the centre moves whole pixels (no interpolation). Its
    # direction is a convention; the angle's distribution is symmetric either way.
    np.testing.assert_allclose(apply(theta=90.0), np.rot90(image, 1), atol=1e-5)


def test_channel_shift_and_brightness_follow_the_paper_generator_formulas():
    image = _pattern()
    low, high = image.min(), image.max()
    shifted = augment.apply_transforms(image[None], _one(channel_shift_intensity=0.1)).numpy()[0]
    np.testing.assert_allclose(shifted, np.clip(image + 0.1, low, high), atol=1e-6)
    brighter = augment.apply_transforms(image[None], _one(brightness=1.1)).numpy()[0]
    np.testing.assert_allclose(brighter, np.minimum(low + 1.1 * (image - low), high), atol=1e-5)


def test_random_transforms_match_the_paper_generators_apply_transform():
    """The paper's own apply_transform, fed our sampled parameters, gives our images."""
    images, _ = make_images(12, seed=3)
    images = data.standardize(images, data.compute_stats(images))
    params = {key: value.numpy() for key, value in augment.sample_transforms(12, [1, 2]).items()}
    ours = augment.apply_transforms(images, params).numpy()
    no_intensity = dict(params, channel_shift_intensity=np.zeros(12, np.float32),
                        brightness=np.ones(12, np.float32))
    ours_geometry = augment.apply_transforms(images, no_intensity).numpy()
    generator = data.paper_generator()
    for i, image in enumerate(images):
        draw = {key: value[i].item() for key, value in params.items()}
        geometry = {key: draw[key] for key in ("theta", "tx", "ty", "shear", "zx", "zy", "flip_horizontal")}
        np.testing.assert_allclose(ours_geometry[i], generator.apply_transform(image, geometry), atol=1e-4)
        # With channel shift and brightness, IDG also rounds the image to 256 levels of
        # its own range on the way through PIL; allow two of those steps.
        paper = generator.apply_transform(image, draw)
        step = (paper.max() - paper.min()) / 255
        np.testing.assert_allclose(ours[i], paper, atol=2.5 * step)


# --- make_dataset -----------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    images, labels = make_images(100, seed=5)
    # Tag each image with its index, so a test can find where any yielded image came from.
    images[:, 0, 0, 0] = np.arange(100)
    return images, data.one_hot(labels), data.compute_stats(images)


def _epoch(dataset):
    pairs = [(x.numpy(), y.numpy()) for x, y in dataset]
    return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs]), [len(x) for x, _ in pairs]


def test_without_augmentation_batches_are_exactly_data_standardize(small):
    images, labels, stats = small
    x, y, sizes = _epoch(augment.make_dataset(images, labels, stats, 32, augment=None, shuffle=False))
    assert sizes == [32, 32, 32, 4] and x.dtype == np.float32 and y.dtype == np.float32
    np.testing.assert_array_equal(x, data.standardize(images, stats))
    np.testing.assert_array_equal(y, labels)


@pytest.mark.parametrize("augmentation", [None, "crop", "paper"])
def test_pipelines_run_without_tf_data_autotuning(small, augmentation):
    """With autotuning on, dropping an iterator at each epoch's start waited tens of seconds for its thread."""
    images, labels, stats = small
    dataset = augment.make_dataset(images, labels, stats, 32, augment=augmentation, shuffle=True, seed=0)
    assert dataset.options().autotune.enabled is False


def _order(x, stats):
    """The source index of every yielded image, read from its tag pixel."""
    return np.rint(x[:, 0, 0, 0] * stats["std"] + stats["mean"]).astype(int)


def test_shuffle_reshuffles_every_epoch_and_keeps_labels_with_images(small):
    images, labels, stats = small
    dataset = augment.make_dataset(images, labels, stats, 32, augment=None, shuffle=True, seed=1)
    first, second = _epoch(dataset), _epoch(dataset)
    order1, order2 = _order(first[0], stats), _order(second[0], stats)
    assert sorted(order1) == list(range(100)) and sorted(order2) == list(range(100))
    assert list(order1) != list(order2) and list(order1) != list(range(100))
    np.testing.assert_array_equal(first[1], labels[order1])
    np.testing.assert_array_equal(first[0], data.standardize(images[order1], stats))


def test_augmented_batches_are_standardized_float32_and_vary(small):
    images, labels, stats = small
    dataset = augment.make_dataset(images, labels, stats, 64, augment="paper", shuffle=False, seed=2)
    (x1, y1, sizes), (x2, _, _) = _epoch(dataset), _epoch(dataset)
    assert x1.shape == (100, 32, 32, 3) and x1.dtype == np.float32 and sizes == [64, 36]
    np.testing.assert_array_equal(y1, labels)
    plain = data.standardize(images, stats)
    # Every image is changed, each epoch differently, and stays within its own range
    # (nearest fill, clipped channel shift and brightness never leave it).
    assert np.abs(x1 - plain).reshape(100, -1).max(axis=1).min() > 0
    assert not np.allclose(x1, x2)
    assert (x1.reshape(100, -1).max(axis=1) <= plain.reshape(100, -1).max(axis=1) + 1e-5).all()
    assert (x1.reshape(100, -1).min(axis=1) >= plain.reshape(100, -1).min(axis=1) - 0.1 - 1e-5).all()
    assert abs(float(x1.mean()) - float(plain.mean())) < 0.1


def test_a_seed_makes_order_and_augmentation_repeatable(small):
    images, labels, stats = small
    make = lambda seed: augment.make_dataset(images, labels, stats, 32, augment="paper",  # noqa: E731
                                             shuffle=True, seed=seed)
    one, two, other = make(4), make(4), make(5)
    for _ in range(2):  # the first and second epochs both repeat
        a, b, c = _epoch(one), _epoch(two), _epoch(other)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert not np.allclose(a[0], c[0])


def test_bad_inputs_are_refused(small):
    images, labels, stats = small
    with pytest.raises(ValueError, match="uint8"):
        augment.make_dataset(images.astype(np.float32), labels, stats, 8, augment=None, shuffle=False)
    with pytest.raises(ValueError, match="labels"):
        augment.make_dataset(images, labels[:5], stats, 8, augment=None, shuffle=False)
    with pytest.raises(ValueError, match="batch_size"):
        augment.make_dataset(images, labels, stats, 0, augment=None, shuffle=False)


# --- The fast recipe's crop: pad-4 reflected random crop and horizontal flip ----------

@pytest.mark.parametrize("pad", [None, 2])  # None: the default, 4 pixels each way (He et al. 2016)
def test_crop_is_a_symmetric_padded_random_crop_then_flip_pixel_for_pixel(pad):
    """Each output equals numpy's pad (mode "symmetric", `pad` pixels) cropped at the drawn offset,
    mirrored when the flip was drawn: recovered here from the transform matrix."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(64, 32, 32, 3)).astype(np.float32)
    seed = np.array([5, 9])
    if pad is None:
        matrices, out, pad = augment.crop_matrices(64, seed).numpy(), augment.crop_batch(images, seed).numpy(), 4
    else:
        matrices = augment.crop_matrices(64, seed, padding=pad).numpy()
        out = augment.crop_batch(images, seed, padding=pad).numpy()
    flips, shifts = 0, set()
    for image, result, (sign, _, offset_x, _, _, shift_y, _, _) in zip(images, out, matrices):
        flipped = sign < 0
        source = image[:, ::-1] if flipped else image
        shift_x = -(offset_x - 31) if flipped else offset_x  # the shift, seen in the mirrored image
        dx, dy = int(shift_x), int(shift_y)
        assert -pad <= dx <= pad and -pad <= dy <= pad
        padded = np.pad(source, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
        np.testing.assert_allclose(result, padded[pad + dy:pad + dy + 32, pad + dx:pad + dx + 32], atol=1e-5)
        flips += flipped
        shifts.add((dx, dy))
    assert 16 <= flips <= 48 and len(shifts) > min(20, (2 * pad + 1) ** 2 - 5)  # both views, many offsets


@pytest.mark.parametrize("pad", [4, 2, 0])
def test_crop_draws_every_offset_and_flips_half_the_images(pad):
    matrices = augment.crop_matrices(DRAWS, np.array([1, 2]), padding=pad).numpy()
    shift_y = matrices[:, 5]
    assert set(np.unique(shift_y)) == set(range(-pad, pad + 1))  # every shift of the pad-`pad` crop
    assert abs(float(np.mean(matrices[:, 0] < 0)) - 0.5) < 0.02


def test_crop_dataset_keeps_labels_and_varies_by_epoch(small):
    images, labels, stats = small
    dataset = augment.make_dataset(images, labels, stats, 64, augment="crop", shuffle=False, seed=2)
    (x1, y1, _), (x2, _, _) = _epoch(dataset), _epoch(dataset)
    np.testing.assert_array_equal(y1, labels)
    assert not np.allclose(x1, x2)
    plain = data.standardize(images, stats)
    # Pixels are moved, never changed: each output's values are a subset of its input's.
    for index in range(0, 100, 17):
        assert np.isin(x1[index], plain[index]).all()
    with pytest.raises(ValueError, match="unknown augment 'rotate'"):
        augment.make_dataset(images, labels, stats, 8, augment="rotate", shuffle=False)


def test_crop_dataset_shifts_by_its_crop_padding_only(small):
    """crop_padding=0 keeps every pixel in place (flips only); only the crop takes it."""
    images, labels, stats = small
    x, _, _ = _epoch(augment.make_dataset(images, labels, stats, 64, augment="crop", shuffle=False, seed=2,
                                          crop_padding=0))
    plain = data.standardize(images, stats)
    flipped = np.array([np.allclose(out, image[:, ::-1], atol=1e-5) for out, image in zip(x, plain)])
    unchanged = np.array([np.allclose(out, image, atol=1e-5) for out, image in zip(x, plain)])
    assert (flipped | unchanged).all() and 0 < flipped.sum() < len(images)
    for bad, augment_name in ((-1, "crop"), (2.5, "crop"), (2, "paper"), (2, None)):
        with pytest.raises(ValueError, match="crop_padding must be an integer"):
            augment.make_dataset(images, labels, stats, 8, augment=augment_name, shuffle=False, crop_padding=bad)


def test_cutout_zeroes_one_square_of_the_given_side_clipped_at_the_edges():
    masks = augment.cutout_masks(DRAWS, 8, np.array([3, 4])).numpy()[..., 0]
    hidden = masks == 0
    for mask in hidden[:200]:
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        # One axis-aligned rectangle: every pixel between its first and last row and column.
        assert mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all() and mask.sum() == len(rows) * len(cols)
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8
        # Shorter than 8 only where the square runs off the image.
        assert len(rows) == 8 or rows[0] == 0 or rows[-1] == 31
        assert len(cols) == 8 or cols[0] == 0 or cols[-1] == 31
    assert (hidden.sum(axis=(1, 2)) == 64).mean() > 0.5  # most squares lie wholly inside
    # The centre is uniform: every row is hidden somewhere among the draws.
    assert hidden.any(axis=(0, 2)).all() and hidden.any(axis=(0, 1)).all()


def test_crop_dataset_with_cutout_zeroes_a_square_in_every_image(small):
    images, labels, stats = small
    dataset = augment.make_dataset(images, labels, stats, 64, augment="crop", shuffle=False, seed=2, cutout=6)
    x, y, _ = _epoch(dataset)
    np.testing.assert_array_equal(y, labels)
    zero = (x == 0).all(axis=-1)  # standardized pixels are almost never exactly 0 on their own
    for mask in zero:
        # One rectangle of at most 6 x 6, applied after the crop (a square cut before a
        # reflect-filled crop would be mirrored into a second patch at an edge).
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        assert 1 <= len(rows) <= 6 and 1 <= len(cols) <= 6
        assert rows[-1] - rows[0] + 1 == len(rows) and cols[-1] - cols[0] + 1 == len(cols)
        assert mask.sum() == len(rows) * len(cols)
    plain, _, _ = _epoch(augment.make_dataset(images, labels, stats, 64, augment="crop", shuffle=False, seed=2))
    assert (plain == 0).all(axis=-1).sum() < len(images)  # without cutout, (almost) none
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="cutout must be an integer"):
            augment.make_dataset(images, labels, stats, 8, augment="crop", shuffle=False, cutout=bad)
    with pytest.raises(ValueError, match="cutout must be an integer"):
        augment.make_dataset(images, labels, stats, 8, augment=None, shuffle=False, cutout=4)


# --- Keras' own layers: RandAugment, RandomErasing, MixUp, CutMix --------------------

LAYER_OPTIONS = [{"policy": "randaugment"}, {"erasing": 1.0}, {"mixing": "mixup"}, {"mixing": "cutmix"}]


@pytest.mark.parametrize("options", LAYER_OPTIONS)
def test_keras_layers_follow_the_pipelines_seed(small, options):
    """The layers draw from the per-batch seeds: a seed repeats them, another seed and the next epoch do not."""
    images, labels, stats = small
    make = lambda seed: augment.make_dataset(images, labels, stats, 32, augment="crop",  # noqa: E731
                                             shuffle=False, seed=seed, **options)
    one, two, other = make(4), make(4), make(5)
    first, again = _epoch(one), _epoch(two)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.allclose(first[0], _epoch(other)[0]) and not np.allclose(first[0], _epoch(one)[0])
    plain = _epoch(augment.make_dataset(images, labels, stats, 32, augment="crop", shuffle=False, seed=4))
    assert not np.allclose(first[0], plain[0])  # the layer changed the cropped images
    low, high = (0 - stats["mean"]) / stats["std"], (255 - stats["mean"]) / stats["std"]
    assert first[0].min() >= low - 1e-4 and first[0].max() <= high + 1e-4  # value_range: standardized pixels
    np.testing.assert_allclose(first[1].sum(axis=1), 1, atol=1e-5)
    if "mixing" in options:  # mixed labels: some rows share their weight between two classes
        assert (first[1].max(axis=1) < 0.99).any()
    else:
        np.testing.assert_array_equal(first[1], labels)


@pytest.mark.parametrize("probability", [1.0, 0.5])
def test_erasing_is_each_images_probability(small, probability, monkeypatch):
    import keras
    images, labels, stats = small
    make = lambda: _epoch(augment.make_dataset(  # noqa: E731
        images, labels, stats, len(images), augment="crop", shuffle=False, seed=3, erasing=probability))[0]
    erased = make()
    # The reference: the same crops, through a stand-in that erases nothing.
    monkeypatch.setattr(keras.layers, "RandomErasing", lambda **options: keras.layers.Identity())
    share = (erased != make()).any(axis=(1, 2, 3)).mean()
    assert share == 1.0 if probability == 1.0 else 0.35 < share < 0.65

def test_mixup_mixes_each_image_and_its_label_by_one_weight(small, monkeypatch):
    import keras

    class Unmixed(keras.layers.Layer):
        """In MixUp's place: the same seeds drawn for the crop, the batch left as it is."""

        def __init__(self, alpha, dtype=None):
            super().__init__(dtype=dtype)

        def call(self, data, training=None):
            return data
    images, labels, stats = small
    x, y, _ = _epoch(augment.make_dataset(images, labels, stats, 100, augment="crop", shuffle=False, seed=7,
                                          mixing="mixup"))
    monkeypatch.setitem(augment.MIXINGS, "mixup", Unmixed)
    crop, unmixed, _ = _epoch(augment.make_dataset(images, labels, stats, 100, augment="crop", shuffle=False, seed=7,
                                                   mixing="mixup"))
    np.testing.assert_array_equal(unmixed, labels)
    flat, crop_flat = x.reshape(100, -1), crop.reshape(100, -1)
    for i in range(100):
        # Some partner j and weight w give both: x = w crop_i + (1 - w) crop_j, y = w y_i + (1 - w) y_j.
        weights = [(j, w) for j in range(100) for w in [float(np.dot(y[i], labels[i]) if not np.array_equal(
            labels[i], labels[j]) else np.nan)] if np.isfinite(w)]
        assert any(np.allclose(flat[i], w * crop_flat[i] + (1 - w) * crop_flat[j], atol=1e-3)
                   for j, w in weights) or np.allclose(y[i], labels[i])


REFINED = {"cutout": 6, "erasing": 1.0, "mixing": "mixup"}  # every step the refine stage turns off


def test_the_heavy_switch_keeps_or_skips_cutout_and_the_layers(small):
    import tensorflow as tf
    images, labels, stats = small
    heavy = tf.Variable(True)
    make = lambda switch: augment.make_dataset(images, labels, stats, 50, augment="crop",  # noqa: E731
                                               shuffle=False, seed=6, heavy=switch, **REFINED)
    on = _epoch(make(heavy))
    unswitched = _epoch(make(None))
    np.testing.assert_array_equal(on[0], unswitched[0])
    np.testing.assert_array_equal(on[1], unswitched[1])
    heavy.assign(False)
    x, y, _ = _epoch(make(heavy))
    np.testing.assert_array_equal(y, labels)  # not mixed
    # Whole-pixel crops with reflected edges only move pixels: each image keeps its own values.
    standardized = data.standardize(images, stats)
    assert all(np.isin(x[i], standardized[i]).all() for i in range(len(images)))
    assert not all(np.isin(on[0][i], standardized[i]).all() for i in range(len(images)))


def test_the_refine_stage_switches_at_its_epoch_inside_fit(small):
    """Keras makes each epoch's iterator after on_epoch_begin: no batch of a refined epoch is drawn early."""
    import keras
    import tensorflow as tf
    images, labels, stats = small
    cut = tf.Variable(0.0)

    class Probe(keras.Model):
        def train_step(self, batch):
            x, _ = batch
            # Cutout 32 hides a block of every image; crops alone never give an all-zero pixel.
            hidden = tf.reduce_any(tf.reduce_all(x == 0, axis=-1), axis=[1, 2])
            return {"cut": cut.assign_add(tf.reduce_sum(tf.cast(hidden, tf.float32)))}
    inputs = keras.Input((32, 32, 3))
    model = Probe(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    model.compile()
    lines, per_epoch = [], []
    stage = augment.RefineStage(first_epoch=3, log=lines.append)

    def record(epoch, logs):
        per_epoch.append(int(cut.numpy()))
        cut.assign(0.0)
    dataset = augment.make_dataset(images, labels, stats, 10, augment="crop", shuffle=True, seed=0, cutout=32,
                                   heavy=stage.heavy)
    model.fit(dataset, epochs=5, initial_epoch=1, shuffle=False, verbose=0,  # initial_epoch: as a resumed run
              callbacks=[stage, keras.callbacks.LambdaCallback(on_epoch_end=record)])
    assert per_epoch == [100, 100, 0, 0]
    assert lines == ["epochs 4 onward: crop and flip only (refine stage)"]


def test_keras_layers_need_an_augment(small):
    images, labels, stats = small
    for options in LAYER_OPTIONS:
        with pytest.raises(ValueError, match="apply after an augment"):
            augment.make_dataset(images, labels, stats, 8, augment=None, shuffle=False, **options)


# --- bench.py (a smoke test on tiny data: nothing timed, nothing asserted about speed) ---

def test_bench_command_times_both_pipelines_and_writes_its_report(cifar_dir, tmp_path, monkeypatch):
    import json

    import bench
    import keras
    from keras import layers

    seen = []  # (batch sizes, compute dtype) of the model each training measurement fitted
    fitting = []  # the batch sizes of the fit under way

    class Recorder(layers.Layer):
        """Notes the batch size of each call in a fit: run eagerly, it sees every real batch."""

        def call(self, x):
            if fitting:
                fitting[0].add(int(x.shape[0]))
            return x

    def tiny_model(name, weights=None):
        # Tracing a real network costs 6-10 s a measurement here; a tiny one keeps the
        # whole command (eleven training measurements) to a few seconds. test_models covers the real ones.
        inputs = keras.Input((32, 32, 3))
        x = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, name="conv")(Recorder()(inputs)))
        return keras.Model(inputs, layers.Dense(10, activation="softmax", dtype="float32")(x), name=name)

    fit = keras.Model.fit

    def recording_fit(model, *args, **kwargs):
        seen.append((set(), model.get_layer("conv").compute_dtype))
        fitting.append(seen[-1][0])
        model.run_eagerly = True
        try:
            return fit(model, *args, **kwargs)
        finally:
            fitting.clear()
    make_dataset = bench.augment.make_dataset
    pipelines = []  # (augment, cutout, crop_padding) of each tf.data measurement's input pipeline
    erasings = []  # and its RandomErasing probability

    def recording_make_dataset(*args, **kwargs):
        pipelines.append((kwargs["augment"], kwargs.get("cutout", 0), kwargs.get("crop_padding", augment.CROP_PADDING)))
        erasings.append(kwargs.get("erasing", 0.0))
        return make_dataset(*args, **kwargs)
    compiled_model = bench._compiled_model
    optimizers = []  # the recipe whose optimizer each measurement's model was compiled with

    def recording_compiled_model(name, recipe="paper", *args, **kwargs):
        optimizers.append(recipe)
        return compiled_model(name, recipe, *args, **kwargs)
    monkeypatch.setattr(bench.models, "build_model", tiny_model)
    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    monkeypatch.setattr(bench.augment, "make_dataset", recording_make_dataset)
    monkeypatch.setattr(bench, "_compiled_model", recording_compiled_model)
    # long's crop as ten's, so a bench that ignored the recipe's crop would show here.
    monkeypatch.setitem(recipes.RECIPES["long"]["vgg16"], "crop_padding", 2)
    monkeypatch.setattr(bench, "SLOW_MIXED_IMAGES", 128)  # two batches of 64, when mixed is emulated
    monkeypatch.setattr(bench, "PEAK_SIZE", 256)  # the yardstick's code, not its 2048x2048 cost
    out = tmp_path / "bench.json"
    # 320 images: five batches of the paper's 64, two full batches of the recipes' 128 and a rest.
    assert bench.main(["--data-dir", str(cifar_dir), "--models", "vgg16", "--images", "320",
                       "--test-images", "64", "--repeats", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["train_images"] == 320 and report["device"] and report["cpu"]
    training = report["training"]
    # The recipes' rows in the precision they train in here: mixed with native bfloat16, else float32.
    own = recipes.resolve_settings("vgg16", recipes.recipe_settings("long", "vgg16")).precision
    long_own = [("long", own)] if own != "float32" else []
    assert [(r["pipeline"], r["precision"]) for r in training] == [
        ("paper", "float32"), ("fast", "float32"), ("fast", "mixed"), ("short", own), ("short-noaug", own),
        ("long", "float32"), *long_own, ("long-noaug", own)]
    assert all(0 < r["cores_used"] and len(r["cores"]) == len(r["steal_cores"]) == 1 for r in training)
    # Each row's share of the peak measured in the same process: its images/s at the model's GFLOP.
    peak, peak_float32 = report["matmul_peak_gflops"], report["matmul_peak_gflops_float32"]
    assert min(peak, peak_float32, report["matmul_peak_gflops_after"], report["matmul_peak_gflops_float32_after"]) > 0
    for row in training:
        assert row["share_of_peak"] == pytest.approx(row["images_per_second"] * row["gflop_per_image"] / peak)
        assert row["share_of_float32_peak"] == pytest.approx(row["images_per_second"] * row["gflop_per_image"]
                                                             / peak_float32)
    # Each row's batch size is the one its model trained with (the largest batch it saw: the
    # last batch of an epoch may be smaller), and mixed rows trained in a 16-bit dtype.
    assert [r["batch_size"] for r in training] == [max(sizes) for sizes, _ in seen]
    long = recipes.recipe_settings("long", "vgg16")
    assert training[5]["batch_size"] == long.batch_size == 128  # in float32: never the emulated cut
    # Each recipe's row trains through that recipe's own augmentation and under its optimizer,
    # its -noaug row through none.
    short, default = recipes.recipe_settings("short", "vgg16"), augment.CROP_PADDING
    assert pipelines == [("paper", 0, default), ("paper", 0, default), ("crop", short.cutout, default),
                         (None, 0, default), ("crop", long.cutout, 2), *[("crop", long.cutout, 2)] * len(long_own),
                         (None, 0, default)]
    assert optimizers == ["paper"] * 3 + ["short"] * 2 + ["long"] * (2 + len(long_own))
    assert [r["precision"] == "mixed" for r in training] == [dtype != "float32" for _, dtype in seen]
    assert all(r["images_per_second"] > 0 and len(r["runs"]) == 1 for r in training)
    assert [r["precision"] for r in report["prediction"]] == ["float32", "mixed"]
    assert all(r["seconds_for_test_set"] > 0 for r in report["prediction"])

    assert report["settings"]["layers"] == {} and set(erasings) == {0.0}
    assert report["settings"]["threads"] == {"inter_op": 0, "intra_op": 0}  # TensorFlow's defaults

    # A chosen subset, training only, on a network no recipe of it serves but short, with a Keras
    # layer added to the recipe's pipeline; an unknown pipeline or a bad probability is one line.
    seen.clear()
    assert bench.main(["--data-dir", str(cifar_dir), "--models", "alexnet", "--images", "320", "--repeats", "1",
                       "--pipelines", "short,long", "--batch-size", "64", "--no-predict", "--erasing", "0.5",
                       "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["layers"] == {"erasing": 0.5} and erasings[-1] == 0.5
    assert [(r["pipeline"], r["precision"], r["batch_size"]) for r in report["training"]] == [("short", own, 64)]
    assert report["prediction"] == []
    assert [max(sizes) for sizes, _ in seen] == [r["batch_size"] for r in report["training"]]  # 128 where emulated
    with pytest.raises(SystemExit) as raised:
        bench.main(["--data-dir", str(cifar_dir), "--pipelines", "crop,warp", "--out", str(out)])
    assert raised.value.code == 2
    with pytest.raises(SystemExit) as raised:
        bench.main(["--data-dir", str(cifar_dir), "--erasing", "2", "--out", str(out)])
    assert raised.value.code == 2
    assert keras.config.dtype_policy().name == "float32"  # the mixed policy never leaks out


def test_bench_refuses_unknown_models(tmp_path, capsys):
    import bench
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--data-dir", str(tmp_path), "--models", "vgg61", "--out", str(tmp_path / "x.json")])
    assert exit_info.value.code == 2
    assert "unknown model 'vgg61'" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("native_bfloat16", [True, False])
def test_bench_times_each_recipe_in_the_precision_it_trains_in_here(native_bfloat16, monkeypatch):
    """A recipe whose precision is auto is timed as train.py would run it on this CPU, once."""
    import bench
    import rundir
    monkeypatch.setattr(rundir, "cpu_description", lambda: ("a CPU", native_bfloat16))
    monkeypatch.setattr(recipes.tf.config, "list_physical_devices", lambda kind=None: [])  # a CPU-only machine
    own = "mixed" if native_bfloat16 else "float32"
    assert recipes.recipe_settings("long", "vgg16").precision == "auto"
    long_own = [("long", "mixed", 128)] if native_bfloat16 else []  # as float32, the same as the row before
    assert bench.measurements("vgg16") == [
        ("paper", "float32", 64), ("fast", "float32", 64), ("fast", "mixed", 64), ("short", own, 128),
        ("short-noaug", own, 128), ("long", "float32", 128), *long_own, ("long-noaug", own, 128)]
    # alexnet has no long recipe; a pipeline not asked for is not measured.
    assert bench.measurements("alexnet", ("paper", "short", "long")) == [("paper", "float32", 64), ("short", own, 128)]

"""Batched tf.data augmentation: the paper's ImageDataGenerator, fused, and the fast recipe's crop.

    dataset = make_dataset(x_train, one_hot(y_train), stats, 64, augment="paper", shuffle=True, seed=0)
    model.fit(dataset, epochs=60, validation_data=make_dataset(x_valid, ..., augment=None, shuffle=False))

Two augmentations, each one projective transform per image applied to a whole batch
by one `keras.ops.image.affine_transform` call (on the TensorFlow backend, which
tf.data needs, Keras runs it as one `ImageProjectiveTransformV3` op, with TensorFlow's
matrix convention, bilinear sampling and fill modes):

- "paper": the report's ImageDataGenerator, described below;
- "crop": random translation by up to CROP_PADDING pixels (or make_dataset's
  `crop_padding`) with reflected edges plus a horizontal flip, the standard CIFAR-10
  augmentation of fast recipes (He et al. 2016; Page's ResNet-9; airbench) for `--recipe
  fast`. A translation by whole pixels with reflected fill is pad-then-random-crop without
  materializing the padded image.

The paper (Gomez Cruz 2025, section 2.3) augments with Keras' ImageDataGenerator
(data.PAPER_AUGMENTATION), which transforms one image at a time in Python and scipy on
one thread. Here the same random transform, drawn from the same distributions, is
applied to a whole batch at once inside a parallel tf.data map:

- rotation, shifts, shear, zoom and the horizontal flip are composed exactly as
  ImageDataGenerator composes them (rotation . shift . shear . zoom about the image
  centre, flip after) into one matrix per image, applied with a single bilinear
  `affine_transform` call for the batch, edges filled with the nearest pixel
  (IDG's fill_mode="nearest", interpolation order 1);
- the channel shift is IDG's: one offset for all three channels, drawn from
  +-channel_shift_range in the units of the standardized input, the result clipped to
  the image's own [min, max];
- the brightness factor b in [0.9, 1.1] does what IDG's does to standardized input.
  IDG hands a float image with negative values to PIL: array_to_img rescales it so its
  minimum is 0 and its maximum 255, ImageEnhance.Brightness multiplies by b and clips
  at 255, and the result is mapped back to the original range. On standardized input
  that is `min(m + b * (x - m), M)` with m, M the image's own minimum and maximum,
  which is what we compute, minus IDG's 8-bit rounding of the image on the way
  (steps of (M - m) / 255, about 0.015 standardized units).

The images stay uint8 until a batch is gathered (a quarter of float32's memory for the
shuffle and the gather); the cast and standardization happen once per batch, just
before the transform that needs floats. No Python runs per epoch: shuffling and the
random parameters are re-drawn by tf.data every pass, from `seed` when one is given.
"""
import functools
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of our logs

import keras
import numpy as np
import tensorflow as tf

from data import IMAGE_SHAPE, PAPER_AUGMENTATION, standardization

# The paper's ranges, read from its one declaration in data.py (section 2.3).
ROTATION_DEGREES = float(PAPER_AUGMENTATION["rotation_range"])  # angle ~ U(-15, 15) degrees
HEIGHT_SHIFT = float(PAPER_AUGMENTATION["height_shift_range"])  # ~ U(-0.12, 0.12) of the height
WIDTH_SHIFT = float(PAPER_AUGMENTATION["width_shift_range"])  # ~ U(-0.12, 0.12) of the width
SHEAR_DEGREES = float(PAPER_AUGMENTATION["shear_range"])  # shear angle ~ U(-10, 10) degrees
ZOOM_RANGE = (1 - PAPER_AUGMENTATION["zoom_range"],
              1 + PAPER_AUGMENTATION["zoom_range"])  # zx, zy ~ U(0.9, 1.1), drawn independently
HORIZONTAL_FLIP = bool(PAPER_AUGMENTATION["horizontal_flip"])  # with probability 0.5
CHANNEL_SHIFT = float(PAPER_AUGMENTATION["channel_shift_range"])  # offset ~ U(-0.1, 0.1), standardized units
BRIGHTNESS_RANGE = tuple(float(v) for v in PAPER_AUGMENTATION["brightness_range"])  # factor ~ U(0.9, 1.1)

TRANSFORM_KEYS = ("theta", "tx", "ty", "shear", "zx", "zy", "flip_horizontal",
                  "channel_shift_intensity", "brightness")  # ImageDataGenerator.get_random_transform's names


def sample_transforms(count, seed, image_shape=IMAGE_SHAPE):
    """Draw `count` random transforms, as ImageDataGenerator.get_random_transform does.

    Args:
        count: number of images (a Python int or a scalar tensor).
        seed: a stateless-random seed, an int pair (shape (2,)).
        image_shape: (height, width, channels) of the images.

    Returns:
        A dict of (count,) tensors under IDG's keys: "theta" and "shear" in degrees,
        "tx" and "ty" in pixels, "zx" and "zy" zoom factors (IDG's convention: > 1
        shows a smaller image), "flip_horizontal" as bool, "channel_shift_intensity"
        in standardized units and "brightness" as a factor.
    """
    height, width = image_shape[0], image_shape[1]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=9)

    def uniform(index, low, high):
        return tf.random.stateless_uniform([count], seeds[index], minval=low, maxval=high)

    # IDG multiplies the drawn fraction by the size of the axis it names: its tx comes
    # from height_shift_range and rows, ty from width_shift_range and columns.
    return {
        "theta": uniform(0, -ROTATION_DEGREES, ROTATION_DEGREES),
        "tx": uniform(1, -HEIGHT_SHIFT, HEIGHT_SHIFT) * height,
        "ty": uniform(2, -WIDTH_SHIFT, WIDTH_SHIFT) * width,
        "shear": uniform(3, -SHEAR_DEGREES, SHEAR_DEGREES),
        "zx": uniform(4, *ZOOM_RANGE),
        "zy": uniform(5, *ZOOM_RANGE),
        "flip_horizontal": tf.logical_and(uniform(6, 0.0, 1.0) < 0.5, HORIZONTAL_FLIP),
        "channel_shift_intensity": uniform(7, -CHANNEL_SHIFT, CHANNEL_SHIFT),
        "brightness": uniform(8, *BRIGHTNESS_RANGE),
    }


def transform_matrices(params, image_shape=IMAGE_SHAPE):
    """One (8,) projective transform per image, for keras.ops.image.affine_transform.

    Composes IDG's apply_affine_transform: M = rotation . shift . shear . zoom, mapping
    output to input coordinates about the image centre, then the horizontal flip (IDG
    flips after the affine step, which is M . diag(-1, 1) in centred coordinates).
    IDG's matrix ends up acting on (column, row), which is affine_transform's (x, y)
    (output point to input point, as ImageProjectiveTransformV3), so its tx moves
    columns and ty moves rows.
    """
    theta = params["theta"] * (math.pi / 180)
    shear = params["shear"] * (math.pi / 180)
    cos, sin = tf.cos(theta), tf.sin(theta)
    zx, zy = params["zx"], params["zy"]
    # Linear part L = R . S . Z with R = [[cos, -sin], [sin, cos]],
    # S = [[1, -sin(shear)], [0, cos(shear)]], Z = diag(zx, zy).
    s01, s11 = -tf.sin(shear), tf.cos(shear)
    l00 = cos * zx
    l01 = (cos * s01 - sin * s11) * zy
    l10 = sin * zx
    l11 = (sin * s01 + cos * s11) * zy
    flip = tf.where(params["flip_horizontal"], -1.0, 1.0)
    l00, l10 = l00 * flip, l10 * flip
    # The shift is applied before the linear part (M = R . T . ...), so it is rotated.
    shift_x = cos * params["tx"] - sin * params["ty"]
    shift_y = sin * params["tx"] + cos * params["ty"]
    # About the centre o: input = L (output - o) + R t + o. IDG takes o from the
    # height for x and the width for y; identical for square images.
    ox = float(image_shape[0]) / 2 - 0.5
    oy = float(image_shape[1]) / 2 - 0.5
    a2 = shift_x + ox - l00 * ox - l01 * oy
    b2 = shift_y + oy - l10 * ox - l11 * oy
    zeros = tf.zeros_like(l00)
    return tf.stack([l00, l01, a2, l10, l11, b2, zeros, zeros], axis=1)


def apply_transforms(images, params):
    """Apply sampled transforms to a batch of standardized float32 images (B, H, W, C).

    Same steps and order as ImageDataGenerator.apply_transform: affine (with the flip
    folded in), channel shift, brightness; see the module docstring for the last two.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    images = keras.ops.image.affine_transform(
        images, transform_matrices(params, images.shape[1:]), interpolation="bilinear",
        fill_mode="nearest", data_format="channels_last")
    # Channel shift: one offset for every channel, clipped to the image's own range.
    low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
    shift = tf.reshape(params["channel_shift_intensity"], [-1, 1, 1, 1])
    images = tf.clip_by_value(images + shift, low, high)
    # Brightness: scale about the image's minimum, clipped at its maximum (IDG via PIL).
    low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
    factor = tf.reshape(params["brightness"], [-1, 1, 1, 1])
    return tf.minimum(low + factor * (images - low), high)


def augment_batch(images, seed):
    """Randomly augment a batch of standardized float32 images with one stateless seed pair."""
    images = tf.convert_to_tensor(images, tf.float32)
    return apply_transforms(images, sample_transforms(tf.shape(images)[0], seed, images.shape[1:]))


CROP_PADDING = 4  # pixels of random translation each way: pad 4 + random 32x32 crop (He et al. 2016)


def crop_matrices(count, seed, image_shape=IMAGE_SHAPE, padding=CROP_PADDING):
    """(count, 8) transforms: a whole-pixel shift in [-padding, padding] each way and a
    horizontal flip with probability 0.5, drawn from one stateless seed pair."""
    shift_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2))
    shifts = tf.cast(tf.random.stateless_uniform([count, 2], shift_seed, minval=-padding,
                                                 maxval=padding + 1, dtype=tf.int32), tf.float32)
    flip = tf.random.stateless_uniform([count], flip_seed) < 0.5
    # Output (x, y) reads input (sign * x + offset_x, y + shift_y); a flip mirrors about the centre.
    sign = tf.where(flip, -1.0, 1.0)
    offset_x = tf.where(flip, float(image_shape[1] - 1), 0.0) + shifts[:, 0]
    zeros, ones = tf.zeros([count]), tf.ones([count])
    return tf.stack([sign, zeros, offset_x, zeros, ones, shifts[:, 1], zeros, zeros], axis=1)


def crop_batch(images, seed, padding=CROP_PADDING):
    """Random pad-and-crop (reflected edges, `padding` pixels) and horizontal flip of a float32
    batch (B, H, W, C)."""
    images = tf.convert_to_tensor(images, tf.float32)
    # Whole-pixel shifts make bilinear sampling exact; "reflect" mirrors about the edge pixel's
    # outer side (d c b a | a b c d), numpy's "symmetric" padding (not numpy's "reflect").
    return keras.ops.image.affine_transform(
        images, crop_matrices(tf.shape(images)[0], seed, images.shape[1:], padding), interpolation="bilinear",
        fill_mode="reflect", data_format="channels_last")


AUGMENTERS = {"paper": augment_batch, "crop": crop_batch}  # make_dataset's augment= choices


def cutout_masks(count, size, seed, image_shape=IMAGE_SHAPE):
    """(count, H, W, 1) float32 masks: 0 inside one size x size square per image, 1 elsewhere.

    Cutout (DeVries & Taylor 2017): the square's centre is uniform over the whole image,
    so a square near an edge is partly outside it and hides less, as in the paper's code.
    """
    height, width = image_shape[0], image_shape[1]
    # Uniform in [0, 1) scaled to each side: the integer op takes one scalar maxval for both axes.
    unit = tf.random.stateless_uniform([count, 2], tf.cast(seed, tf.int64))
    centres = tf.cast(tf.floor(unit * tf.constant([height, width], tf.float32)), tf.int32)
    low = centres - size // 2  # the square covers [low, low + size) on each axis
    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]
    inside = ((rows >= low[:, 0, None, None]) & (rows < low[:, 0, None, None] + size)
              & (cols >= low[:, 1, None, None]) & (cols < low[:, 1, None, None] + size))
    return tf.cast(~inside, tf.float32)[..., None]


def cutout_batch(images, size, seed):
    """Zero one random size x size square of each standardized image (0 is the data's mean)."""
    images = tf.convert_to_tensor(images, tf.float32)
    return images * cutout_masks(tf.shape(images)[0], size, seed, images.shape[1:])


# Keras' own augmentation layers (keras.layers), applied after the crop, flip and Cutout:
# a per-image policy and RandomErasing on the images, then MixUp or CutMix on the batch.
# AugMix is left out: Keras 3.15's picks its chain's ops with Python's random when traced, so
# in a tf.data map every batch would get the same ops.
POLICIES = {"randaugment": keras.layers.RandAugment}  # Cubuk et al. 2020: 2 ops an image, magnitude 0.5
MIXINGS = {"mixup": keras.layers.MixUp,  # Zhang et al. 2018: alpha 1 on CIFAR-10
           "cutmix": keras.layers.CutMix}  # Yun et al. 2019: alpha (Keras' factor) 1 on CIFAR


class BatchSeeds(keras.random.SeedGenerator):
    """A SeedGenerator that hands Keras' random layers seeds folded from the pipeline's per-batch
    stateless seed, so that --seed repeats their draws and a resumed run does not replay them."""

    def __init__(self):  # no state variable: each batch brings its own seed
        self.batch_seed, self.draws = None, 0

    def next(self, ordered=True):
        self.draws += 1  # each draw of a traced map gets its own stream
        return tf.random.experimental.stateless_fold_in(self.batch_seed, self.draws)


def keras_augmentation(value_range, policy=None, erasing=0.0, mixing=None, mixing_alpha=1.0):
    """(image layers, the batch-mixing layer or None, their BatchSeeds): Keras' layers for make_dataset.

    value_range is the standardized images' (lowest, highest) value: what 0 and 255 map to.
    """
    images, seeds = [], BatchSeeds()
    if policy:
        images.append(POLICIES[policy](value_range=value_range, dtype="float32"))
    if erasing:
        # (P, P): P is each image's probability; a single number would draw it from 0 to P.
        images.append(keras.layers.RandomErasing(factor=(erasing, erasing), value_range=value_range,
                                                 dtype="float32"))
    mix = MIXINGS[mixing]((mixing_alpha if mixing == "mixup" else (mixing_alpha, mixing_alpha)),
                          dtype="float32") if mixing else None
    for layer in [*images, *([mix] if mix else [])]:
        for part in layer._flatten_layers(include_self=True):  # RandAugment draws through its sub-layers
            if hasattr(part, "generator"):
                part.generator = seeds
    return images, mix, seeds


class RefineStage(keras.callbacks.Callback):
    """Switches a pipeline's heavier augmentation off for a run's last epochs: the refine stage of
    He et al. 2019 (Data augmentation revisited), training on crops and flips alone at the end.

        stage = RefineStage(first_epoch=52)            # 0-based: epochs 53 onward are refined
        dataset = make_dataset(..., cutout=12, heavy=stage.heavy)
        model.fit(dataset, epochs=58, callbacks=[stage])

    Keras makes each epoch's iterator after on_epoch_begin, so no batch of a refined epoch is
    drawn before the switch; the epoch index makes a resumed run switch at the same epoch.
    """

    def __init__(self, first_epoch, log=None):
        super().__init__()
        self.first_epoch, self.log = int(first_epoch), log
        self.heavy = tf.Variable(True, trainable=False, name="heavy_augmentation")

    def on_epoch_begin(self, epoch, logs=None):
        self.heavy.assign(epoch < self.first_epoch)
        if epoch == self.first_epoch and self.log:
            self.log(f"epochs {epoch + 1} onward: crop and flip only (refine stage)")


def make_dataset(images, labels, stats, batch_size, *, augment, shuffle, seed=None, cutout=0,
                 crop_padding=CROP_PADDING, policy=None, erasing=0.0, mixing=None, mixing_alpha=1.0,
                 heavy=None):
    """A tf.data pipeline of standardized (and optionally augmented) batches.

    Args:
        images: uint8 array (N, 32, 32, 3).
        labels: float32 one-hot array (N, 10).
        stats: data.compute_stats of the training split (scalar "mean" and "std").
        batch_size: images a batch; the last batch may be smaller.
        augment: None (clean images), "paper" (the fast equivalent of the paper's
            ImageDataGenerator) or "crop" (random pad-and-crop and flip).
        shuffle: reshuffle the images every pass (every epoch).
        seed: makes the order and the augmentation repeatable; None draws afresh.
        cutout: with `augment`, the side in pixels of a square zeroed in each image
            after the transform (cutout_batch); 0: none.
        crop_padding: with augment="crop", the largest shift in pixels each way.
        policy, erasing, mixing, mixing_alpha: with `augment`, Keras' layers applied after
            it (keras_augmentation): "randaugment"; RandomErasing's probability;
            "mixup" or "cutmix" on the batch, with the Beta(alpha, alpha) mixing weight.
        heavy: None, or a boolean tf.Variable read at each batch (RefineStage.heavy): while it
            holds False, Cutout and the layers are skipped and the batch is only transformed.

    Returns:
        A `tf.data.Dataset` of (float32 images (B, 32, 32, 3), labels (B, 10)), one
        pass over the data per iteration, prefetched.
    """
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.float32)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be a uint8 array (N, H, W, C), received {images.dtype} {images.shape}")
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, received {batch_size!r}")
    if augment is not None and augment not in AUGMENTERS:
        raise ValueError(f"unknown augment {augment!r}; choose None or one of {', '.join(AUGMENTERS)}")
    if not isinstance(cutout, (int, np.integer)) or cutout < 0 or (cutout and augment is None):
        raise ValueError(f"cutout must be an integer >= 0, used with an augment, received {cutout!r}")
    if (not isinstance(crop_padding, (int, np.integer)) or crop_padding < 0
            or (crop_padding != CROP_PADDING and augment != "crop")):
        raise ValueError(f"crop_padding must be an integer >= 0, used with augment='crop', received {crop_padding!r}")
    if (policy or erasing or mixing) and augment is None:
        raise ValueError("policy, erasing and mixing apply after an augment; received augment=None")
    mean, std = (np.float32(value) for value in standardization(stats))
    images_table, labels_table = tf.constant(images), tf.constant(labels)

    # Shuffle indices, not images: a cheap int64 shuffle, then one gather a batch.
    indices = tf.data.Dataset.range(len(images))
    if shuffle:
        indices = indices.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    batches = indices.batch(int(batch_size))

    def standardized(index):
        return (tf.cast(tf.gather(images_table, index), tf.float32) - mean) / std, tf.gather(labels_table, index)

    if augment is not None:
        augment_fn = AUGMENTERS[augment]
        if augment == "crop":
            augment_fn = functools.partial(crop_batch, padding=int(crop_padding))
        # One stateless seed pair per batch, re-drawn every pass, so the parallel map
        # stays deterministic for a given seed and still changes from epoch to epoch.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        value_range = (float((0 - mean) / std), float((255 - mean) / std))
        layers, mix, keras_seeds = keras_augmentation(value_range, policy, erasing, mixing, mixing_alpha)

        def augmented(index, batch_seed):
            x, y = standardized(index)
            if not (cutout or layers or mix):
                return augment_fn(x, batch_seed), y
            # A third seed only for Keras' layers: runs without them draw as they always have.
            transform_seed, cutout_seed, *keras_seed = tf.unstack(
                tf.random.experimental.stateless_split(batch_seed, num=3 if layers or mix else 2))
            x = augment_fn(x, transform_seed)
            if keras_seed:
                keras_seeds.batch_seed, keras_seeds.draws = keras_seed[0], 0

            def heavier(x, y):
                if cutout:
                    x = cutout_batch(x, cutout, cutout_seed)
                for layer in layers:
                    x = layer(x, training=True)
                if mix:
                    mixed = mix({"images": x, "labels": y}, training=True)
                    x, y = mixed["images"], mixed["labels"]
                return x, y
            if heavy is None:
                return heavier(x, y)
            return tf.cond(heavy, lambda: heavier(x, y), lambda: (x, y))
        dataset = tf.data.Dataset.zip(batches, seeds).map(
            augmented, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        dataset = batches.map(standardized, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # Autotuning off: AUTOTUNE then means one map call a core and a prefetch buffer grown on
    # demand. With it on, dropping an iterator (Keras does at each epoch's start) waited for the
    # autotuner's background thread, with both cores idle (docs/performance.md).
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)

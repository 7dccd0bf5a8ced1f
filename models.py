"""The report's three networks as Keras builders, and `python models.py` to print them.

    model = MODELS["vgg16"]()          # uncompiled keras.Model, named layers
    python models.py vgg16 alexnet      # the paper's Figures 2-4 as model.summary()

Every builder returns an uncompiled Functional `keras.Model` whose total parameter
count matches the report's figures exactly (Gomez Cruz 2025, Figures 2-4). The
models take standardized 32x32x3 images (see data.py), as the report trained them.
"""
import os
import sys

import rundir  # first: it sets TensorFlow's C++ log level before TensorFlow loads
from rundir import UserError

import keras
import numpy as np
import tensorflow as tf
from keras import layers

INPUT_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
# The report gives no dropout rates. These rise with depth, as is usual for VGG-style
# CIFAR-10 networks, and 0.5 before the classifiers as in AlexNet and VGG's own papers.
VGG16_DROPOUT_RATES = (0.2, 0.3, 0.4, 0.5)  # after blocks 1-4
VGG16_FILTERS = (32, 64, 128, 256)  # Figure 2: two 3x3 convolutions a block
ALEXNET_DROPOUT_RATES = (0.5, 0.5)  # after fc1 and fc2
PRETRAINED_DROPOUT_RATE = 0.5  # between fc1 and the classifier
BN_MOMENTUM = 0.99  # BatchNormalization's moving-average momentum: Keras' default, which the report kept
PRETRAINED_IMAGE_SIZE = 224  # the report: "resize the initial input images", ImageNet's size
VGG16_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"  # Keras' ImageNet weights


class WeightsError(UserError):
    """Raised when pretrained weights cannot be had (no network, missing file)."""


def _classifier(x, num_classes):
    # Softmax in float32 even under a mixed-precision policy, as Keras' guide advises.
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)


@keras.saving.register_keras_serializable(package="cifar10")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization, trained with TensorFlow's fused kernel.

    Keras 3 trains BatchNormalization as separate float32 ops (a cast, the moments, the
    normalization), each a pass over the activations; TensorFlow's FusedBatchNormV3 (oneDNN
    on CPU, cuDNN on GPU) does it in one on the bfloat16 or float16 activations. Same
    variables, same moving-average update and same inference path as Keras' layer, so
    weights move between the two. Anything the kernel does not cover (not 4-D channels-last,
    a mask, renorm, synchronized statistics) goes to Keras' own code.
    """

    def call(self, inputs, training=None, mask=None):
        if (not (training and self.trainable) or mask is not None or len(inputs.shape) != 4
                or self.axis not in (-1, 3) or self.renorm or self.synchronized):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=gamma, offset=beta, mean=tf.constant([], "float32"),
            variance=tf.constant([], "float32"), epsilon=self.epsilon, exponential_avg_factor=1.0,
            data_format="NHWC", is_training=True)
        # The kernel returns the Bessel-corrected variance; Keras' layer averages the biased one.
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), "float32")
        variance = variance * (count - 1.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs


def build_vgg16(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES, dropout_rates=VGG16_DROPOUT_RATES,
                bn_momentum=BN_MOMENTUM):
    """The report's minimal VGG16, trained from scratch (Figure 2, 1,186,346 parameters).

    Four blocks of [Conv 3x3 same, BatchNorm, Conv 3x3 same, BatchNorm, MaxPool 2,
    Dropout] with 32, 64, 128 and 256 filters, then Flatten and a 10-way softmax.

    Reference: Gomez Cruz, *CIFAR-10 Image Classification*, 2025, section 3.

    Args:
        input_shape: standardized images, (32, 32, 3) for CIFAR-10.
        num_classes: size of the softmax output.
        dropout_rates: one rate for each of the four blocks (the report gives none).
        bn_momentum: BatchNormalization's moving-average momentum.

    Returns:
        An uncompiled `keras.Model` named "vgg16".
    """
    if len(dropout_rates) != len(VGG16_FILTERS):
        raise ValueError(f"dropout_rates needs {len(VGG16_FILTERS)} values, received {dropout_rates!r}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for block, (filters, rate) in enumerate(zip(VGG16_FILTERS, dropout_rates), start=1):
        for conv in (1, 2):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                              name=f"block{block}_conv{conv}")(x)
            x = FusedBatchNormalization(momentum=bn_momentum, name=f"block{block}_bn{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        x = layers.Dropout(rate, name=f"block{block}_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _classifier(x, num_classes), name="vgg16")


def build_alexnet(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES, dropout_rates=ALEXNET_DROPOUT_RATES,
                  bn_momentum=BN_MOMENTUM):
    """The report's AlexNet for 32x32 inputs, trained from scratch (Figure 3, 2,915,338 parameters).

    Conv 11x11/4 (128) and Conv 5x5 (256), each with BatchNorm and a 2x2 max-pool
    (6x6, then 3x3, then 1x1 maps as in Figure 3), three more convolutions with
    BatchNorm, a last pool, then two Dense 1024 layers with dropout and the softmax.

    Reference: Gomez Cruz 2025, section 3; Krizhevsky et al., NeurIPS 2012.

    Args:
        input_shape: standardized images, (32, 32, 3) for CIFAR-10.
        num_classes: size of the softmax output.
        dropout_rates: after fc1 and after fc2 (the report gives none).
        bn_momentum: BatchNormalization's moving-average momentum.

    Returns:
        An uncompiled `keras.Model` named "alexnet".
    """
    if len(dropout_rates) != 2:
        raise ValueError(f"dropout_rates needs 2 values, received {dropout_rates!r}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(128, 11, strides=4, activation="relu", name="conv1")(inputs)
    x = FusedBatchNormalization(momentum=bn_momentum, name="bn1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(256, 5, padding="same", activation="relu", name="conv2")(x)
    x = FusedBatchNormalization(momentum=bn_momentum, name="bn2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    # Figure 3's conv2d_2 (3x3 on a 1x1 map) needs "same" padding; its 590,880 is a
    # typo for 590,080 (3*3*256*256 + 256), which the stated total confirms.
    for index, size in ((3, 3), (4, 1), (5, 1)):
        x = layers.Conv2D(256, size, padding="same", activation="relu", name=f"conv{index}")(x)
        x = FusedBatchNormalization(momentum=bn_momentum, name=f"bn{index}")(x)
    # A 2x2 pool of a 1x1 map needs "same" padding to keep Figure 3's 1x1 output.
    x = layers.MaxPooling2D(2, padding="same", name="pool3")(x)
    x = layers.Flatten(name="flatten")(x)
    for index, rate in enumerate(dropout_rates, start=1):
        x = layers.Dense(1024, activation="relu", name=f"fc{index}")(x)
        x = layers.Dropout(rate, name=f"fc{index}_dropout")(x)
    return keras.Model(inputs, _classifier(x, num_classes), name="alexnet")


PREPROCESSINGS = ("standardize", "imagenet")
VGG16_BASE_BLOCKS = ("block1", "block2", "block3", "block4", "block5")  # keras.applications.VGG16's


@keras.saving.register_keras_serializable(package="cifar10")
class ImageNetPreprocessing(layers.Layer):
    """keras.applications.vgg16.preprocess_input as a layer: 0-255 RGB in, ImageNet's input out.

    RGB to BGR, then ImageNet's channel means subtracted, no scaling ("caffe" mode), which
    is what Keras' ImageNet VGG16 weights expect. A registered layer (not a Lambda, which
    keras.saving.load_model refuses in safe mode) with no weights: the means are constants
    of the Keras function, so the model's parameter count is unchanged.
    """

    def call(self, inputs):
        return keras.applications.vgg16.preprocess_input(keras.ops.cast(inputs, self.compute_dtype))


def build_vgg16_pretrained(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES, weights="imagenet",
                           dropout_rate=PRETRAINED_DROPOUT_RATE, image_size=PRETRAINED_IMAGE_SIZE,
                           preprocessing="standardize"):
    """ImageNet VGG16, frozen, under the report's Flatten-Dense-Dropout-Dense head.

    Inputs are resized to 224x224 inside the model (the report found that without it
    training stayed at 10 %). Figure 4: 27,565,386 parameters, 14,714,688 of them the
    frozen base. With preprocessing="standardize" it takes the standardized images of
    data.py, as the report did (not what ImageNet weights expect); with "imagenet" it
    takes 0-255 pixels and applies ImageNet's own preprocessing inside the model
    (ImageNetPreprocessing, no parameters), so model.keras needs nothing else.

    Reference: Gomez Cruz 2025, section 4 (model "A" of Figure 7); Simonyan & Zisserman 2015.

    Args:
        input_shape: 32x32x3 images: standardized, or 0-255 pixels with "imagenet".
        num_classes: size of the softmax output.
        weights: "imagenet" (Keras downloads and verifies it, or reads its cache), a
            path to a local `.h5`/`.weights.h5` file of the VGG16 base without its top,
            or None for random weights.
        dropout_rate: between fc1 and the classifier (the report gives none).
        image_size: the side images are resized to before the base (the report: 224;
            at least 32, the base's five 2x2 pools).
        preprocessing: "standardize" (the report's) or "imagenet" (in the model).

    Returns:
        An uncompiled `keras.Model` named "vgg16_pretrained"; its base is the nested
        model "vgg16", frozen.

    Raises:
        WeightsError: ImageNet weights cannot be downloaded, or the file is missing,
            not HDF5, damaged or for another architecture.
    """
    if preprocessing not in PREPROCESSINGS:
        raise ValueError(f"unknown preprocessing '{preprocessing}'; choose one of {', '.join(PREPROCESSINGS)}")
    if not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"image_size must be an integer >= 32 (the base halves it five times), "
                         f"received {image_size!r}")
    base = _vgg16_base(weights, (image_size, image_size, input_shape[-1]))
    base.trainable = False  # the report froze every pretrained layer
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if preprocessing == "imagenet":
        x = ImageNetPreprocessing(name="imagenet_preprocessing")(x)
    x = layers.Resizing(image_size, image_size, name="resizing")(x)
    x = base(x, training=False)  # keep the frozen base in inference mode
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", name="fc1")(x)
    x = layers.Dropout(dropout_rate, name="fc1_dropout")(x)
    return keras.Model(inputs, _classifier(x, num_classes), name="vgg16_pretrained")


CLASSIFIER = "predictions"  # every builder's last layer: the softmax classifier


@keras.saving.register_keras_serializable(package="cifar10")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate triangle: from 0 up to `peak` over `warmup_steps`, then down to `final`
    at `total_steps`, both in straight lines; past total_steps it stays at `final`.

    The one-cycle shape of Page's ResNet-9 and airbench (Keras' own warm-up comes with a
    cosine or nothing); Li et al. 2020 ("Budgeted training") found a linear decay to zero
    the best of the usual schedules when the epochs are few. Here, not in recipes.py, as the
    optimizers below: a model.keras compiled with it must load wherever models.py is imported.
    """

    def __init__(self, peak, warmup_steps, total_steps, final=0.0):
        self.peak, self.warmup_steps, self.total_steps, self.final = peak, warmup_steps, total_steps, final

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        rising = self.peak * step / max(self.warmup_steps, 1)
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = keras.ops.minimum((step - self.warmup_steps) / decay_steps, 1.0)
        falling = self.peak + (self.final - self.peak) * progress
        return keras.ops.where(step < self.warmup_steps, rising, falling)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "final": self.final}


def _classifier_scaled(base):
    """`base` (a Keras optimizer class) with the classifier's learning rate multiplied by
    classifier_lr_scale, registered so that a model.keras compiled with it loads again."""

    @keras.saving.register_keras_serializable(package="cifar10", name=f"ClassifierScaled{base.__name__}")
    class ClassifierScaled(base):
        def __init__(self, *args, classifier_lr_scale=1.0, **kwargs):
            super().__init__(*args, **kwargs)
            self.classifier_lr_scale = classifier_lr_scale

        def build(self, variables):
            super().build(variables)
            # Keras variables (with their layer's path) here; update_step gets the backend's,
            # which _var_key maps to the same keys.
            self._classifier_keys = {self._var_key(variable) for variable in variables
                                     if variable.path.startswith(f"{CLASSIFIER}/")}

        def update_step(self, gradient, variable, learning_rate):
            if self._var_key(variable) in self._classifier_keys:
                learning_rate = learning_rate * self.classifier_lr_scale
            return super().update_step(gradient, variable, learning_rate)

        def get_config(self):
            return {**super().get_config(), "classifier_lr_scale": self.classifier_lr_scale}

    ClassifierScaled.__name__ = ClassifierScaled.__qualname__ = f"ClassifierScaled{base.__name__}"
    return ClassifierScaled


# The classifier reads 1,024 standardized features (vgg16's Flatten after BatchNorm): plain
# SGD moves its logits ~1,024 times as fast as one weight, and the logits blow up in the
# first steps (docs/recipes.md, "What was measured"). Page's ResNet-9 and airbench scale the logits by
# 1/8 instead; a scale s on the logits is, for SGD, the classifier's learning rate times
# s**2 with the same function class, so the network keeps its layers and parameters.
CLASSIFIER_SCALED_OPTIMIZERS = {"sgd": _classifier_scaled(keras.optimizers.SGD),
                                "adam": _classifier_scaled(keras.optimizers.Adam)}


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the first 8 bytes of every HDF5 file


def _vgg16_base(weights, input_shape):
    """keras.applications.VGG16 without its top; its errors become one-line WeightsErrors.

    Keras fetches and verifies (md5) the ImageNet file itself, into ~/.keras/models/.
    """
    if weights is not None and str(weights).lower() == "none":
        weights = None
    path = None
    if weights not in (None, "imagenet"):
        path = os.path.expanduser(str(weights))
        if os.path.isdir(path):
            raise WeightsError(f"weights file '{weights}' is a folder; pass the .h5 file inside it")
        if not os.path.isfile(path):
            raise WeightsError(f"weights file '{weights}' does not exist")
        try:
            with open(path, "rb") as handle:
                signature = handle.read(len(HDF5_SIGNATURE))
        except OSError as error:
            raise WeightsError(f"weights file '{weights}' cannot be read ({error.strerror or error})") from None
        if signature != HDF5_SIGNATURE:
            raise WeightsError(f"weights file '{weights}' is not an HDF5 file (Keras' VGG16 notop "
                               f"{VGG16_NOTOP_FILE} or a .weights.h5)")
    try:
        return keras.applications.VGG16(include_top=False, weights=path or weights, input_shape=input_shape)
    except Exception as error:  # Keras raises bare Exception (download), OSError (h5py), ValueError
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if path is None:
            raise WeightsError(
                f"could not download the ImageNet VGG16 weights ({reason}); offline, fetch "
                f"{VGG16_NOTOP_FILE} on a machine with network and pass its path with --weights PATH, "
                "or --weights none for random weights") from None
        if isinstance(error, OSError) or "truncated" in reason.lower():
            raise WeightsError(f"weights file '{weights}' is truncated or damaged ({reason})") from None
        raise WeightsError(f"weights file '{weights}' does not hold the weights of a VGG16 base without "
                           f"its top ({reason})") from None


def feature_extractor(model):
    """The frozen part of a vgg16_pretrained model (input to the base's output), sharing its layers."""
    return keras.Model(model.inputs, model.get_layer("flatten").input, name="vgg16_pretrained_features")


def head_model(model):
    """The trainable head of a vgg16_pretrained model (base output to softmax), sharing its layers.

    Training it on feature_extractor(model)'s outputs trains `model` itself.
    """
    features = keras.Input(shape=model.get_layer("flatten").input.shape[1:], name="features")
    x = features
    for name in ("flatten", "fc1", "fc1_dropout", "predictions"):
        x = model.get_layer(name)(x)
    return keras.Model(features, x, name="vgg16_pretrained_head")


def unfreeze(model, blocks):
    """Make the base's layers in `blocks` ("block5", ...) trainable; return their names.

    Keras' transfer-learning guide: set the base trainable, then freeze what stays frozen.
    """
    base = model.get_layer("vgg16")
    known = sorted({layer.name.split("_")[0] for layer in base.layers if layer.name.startswith("block")})
    unknown = [block for block in blocks if block not in known]
    if unknown or not blocks:
        raise UserError(f"cannot fine-tune block '{unknown[0] if unknown else ''}'; the base's blocks "
                        f"are {', '.join(known)}")
    base.trainable = True
    opened = []
    for layer in base.layers:
        layer.trainable = layer.name.split("_")[0] in blocks
        if layer.trainable and layer.weights:
            opened.append(layer.name)
    return opened


# --- Data-dependent initialization (--init) ------------------------------------------
# airbench (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds") gains most of its first
# epochs from two initializations that keep the architecture: the first convolution set to
# whiten the data's patches, and the later convolutions to pass their input through
# (identity, "dirac") on their first in-channels filters. airbench measured them with
# BatchNorm before the activation; these networks have it after, so --init is a lever to
# measure here, not a given.
INITS = ("keras", "whiten", "dirac", "whiten-dirac")
WHITENING_IMAGES = 5000  # training images whose patches give the covariance (airbench: 5,000)
WHITENING_EPSILON = 5e-4  # added to each eigenvalue before 1/sqrt: airbench's, for standardized pixels


def patch_whitening_kernel(images, kernel_shape, strides=1, epsilon=WHITENING_EPSILON):
    """A Conv2D kernel (kh, kw, channels, filters) whose filters whiten `images`' patches.

    The patches' covariance is eigen-decomposed; the filters/2 directions of largest
    variance, each divided by sqrt(eigenvalue + epsilon), are taken with both signs, so
    the ReLU after the convolution keeps both halves of every direction (airbench's
    whitening layer). `images` are standardized NHWC floats.
    """
    height, width, channels, filters = kernel_shape
    size = height * width * channels
    if filters % 2 or filters // 2 > size:
        raise ValueError(f"cannot whiten with {filters} filters of {height}x{width}x{channels}")
    covariance, mean, count = np.zeros((size, size)), np.zeros(size), 0
    for start in range(0, len(images), 500):  # in chunks: 5,000 images of 3x3 patches are ~1 GB at once
        windows = np.lib.stride_tricks.sliding_window_view(
            np.asarray(images[start:start + 500], np.float64), (height, width), axis=(1, 2))
        # (N, rows, cols, C, kh, kw) -> one (kh, kw, C) row per patch: the kernel's own layout
        patches = windows[:, ::strides, ::strides].transpose(0, 1, 2, 4, 5, 3).reshape(-1, size)
        covariance += patches.T @ patches
        mean += patches.sum(axis=0)
        count += len(patches)
    mean /= count
    covariance = covariance / count - np.outer(mean, mean)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    top = eigenvectors[:, ::-1][:, :filters // 2] / np.sqrt(eigenvalues[::-1][:filters // 2] + epsilon)
    return np.concatenate([top, -top], axis=1).reshape(kernel_shape).astype(np.float32)


def dirac_kernel(kernel):
    """`kernel` (kh, kw, in, out), out >= in, with its first `in` filters the identity (airbench)."""
    height, width, channels, _ = kernel.shape
    kernel = np.array(kernel, np.float32)
    kernel[..., :channels] = 0.0
    kernel[height // 2, width // 2, np.arange(channels), np.arange(channels)] = 1.0
    return kernel


def initialize(model, init, images):
    """Re-initialize a freshly built model's convolutions as --init says; returns the layers changed.

    whiten: the first Conv2D's kernel from `images`' patches (patch_whitening_kernel), its
    bias 0. dirac: every later Conv2D with at least as many filters as in-channels
    (dirac_kernel). keras: nothing (Glorot uniform, Keras' default).
    """
    if init not in INITS:
        raise ValueError(f"unknown init '{init}'; choose one of {', '.join(INITS)}")
    convolutions = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    changed = []
    if "whiten" in init:
        first = convolutions[0]
        first.kernel.assign(patch_whitening_kernel(images, tuple(first.kernel.shape), first.strides[0]))
        if first.use_bias:
            first.bias.assign(np.zeros(first.bias.shape, np.float32))
        changed.append(first.name)
    if "dirac" in init:
        for layer in convolutions[1:]:
            if layer.kernel.shape[3] >= layer.kernel.shape[2]:
                layer.kernel.assign(dirac_kernel(keras.ops.convert_to_numpy(layer.kernel)))
                changed.append(layer.name)
    return changed


MODELS = {
    "vgg16": build_vgg16,
    "alexnet": build_alexnet,
    "vgg16_pretrained": build_vgg16_pretrained,
}


# Each model's own dropout rates and the builder argument that takes them.
DROPOUT_RATES = {"vgg16": VGG16_DROPOUT_RATES, "alexnet": ALEXNET_DROPOUT_RATES,
                 "vgg16_pretrained": (PRETRAINED_DROPOUT_RATE,)}
_DROPOUT_ARGUMENT = {"vgg16": "dropout_rates", "alexnet": "dropout_rates", "vgg16_pretrained": "dropout_rate"}


def build_model(name, weights=None, dropout_scale=None, bn_momentum=None, image_size=None,
                preprocessing=None):
    """Build a registry model by name.

    Args:
        name: a key of MODELS.
        weights: vgg16_pretrained's base weights (see build_vgg16_pretrained); ignored otherwise.
        dropout_scale: None for the builder's own dropout rates, or a factor they are
            multiplied by (0 turns dropout off).
        bn_momentum: None for Keras' default, or BatchNormalization's momentum (the
            models trained from scratch; the pretrained base has no BatchNorm).
        image_size, preprocessing: vgg16_pretrained's (see build_vgg16_pretrained); None
            for the builder's defaults (the report's).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; choose one of {', '.join(MODELS)}")
    options = {}
    if dropout_scale is not None:
        rates = tuple(rate * dropout_scale for rate in DROPOUT_RATES[name])
        options[_DROPOUT_ARGUMENT[name]] = rates[0] if name == "vgg16_pretrained" else rates
    if bn_momentum is not None and name != "vgg16_pretrained":
        options["bn_momentum"] = bn_momentum
    if name == "vgg16_pretrained":
        options["weights"] = weights
        options.update({key: value for key, value in (("image_size", image_size),
                                                      ("preprocessing", preprocessing)) if value is not None})
    return MODELS[name](**options)


def set_precision(precision, on_gpu=False):
    """Set Keras' global dtype policy: "float32", or "mixed" (bfloat16 on CPU, float16 on GPU).

    Returns the policy's name. Mixed float16 suits NVIDIA tensor cores; bfloat16 keeps
    float32's range (no loss scaling) and is fast on CPUs with AVX-512 BF16 or AMX.
    """
    if precision not in ("float32", "mixed"):
        raise ValueError(f"unknown precision '{precision}'; choose float32 or mixed")
    policy = "float32" if precision == "float32" else ("mixed_float16" if on_gpu else "mixed_bfloat16")
    keras.mixed_precision.set_global_policy(policy)
    return policy


def load_model(run_dir):
    """Load a run folder's model.keras; a missing or broken file is a UserError naming it.

    Here, not in rundir.py: the custom objects a model.keras may name (the
    ImageNetPreprocessing layer, the ClassifierScaled optimizers, the OneCycle schedule)
    are registered by this module, and rundir.py imports no module of ours.
    """
    path = os.path.join(run_dir, rundir.MODEL_FILE)
    if not os.path.isfile(path):
        raise UserError(f"{path}: missing (is '{run_dir}' a run folder made by train.py?)")
    rundir.check_archive(path, "the run's model")  # damaged or truncated, not "File not found" as Keras says
    try:
        return keras.saving.load_model(path)
    except Exception as error:  # Keras raises many types for a damaged archive
        raise UserError(f"{path}: cannot be loaded ({type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''})") from None


def count_parameters(model):
    """(total, trainable, frozen) parameter counts, as model.summary() reports them."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return trainable + frozen, trainable, frozen


@rundir.one_line_errors("models.py")
def main(argv=None):
    parser = rundir.ArgumentParser(
        prog="models.py", description="Print model.summary() of the report's networks "
        "(Figures 2-4), with random weights: nothing is downloaded.")
    parser.add_argument("names", nargs="*", metavar="NAME", default=list(MODELS),
                        help=f"models to show, from {', '.join(MODELS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in MODELS]
    if unknown:
        raise UserError(f"unknown model '{unknown[0]}'; choose one of {', '.join(MODELS)}")
    for name in args.names:
        model = build_model(name, weights=None)
        model.summary()
        total, _, frozen = count_parameters(model)
        print(f"{name}: {total:,} parameters ({frozen:,} frozen)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

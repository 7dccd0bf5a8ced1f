"""An average of a model's weights, validated and saved as the model: exponential, or the
plain mean of the last epochs (SWA).

    average = averaging.WeightAverage(momentum=0.99, every=5)
    model.fit(..., callbacks=[average, ...])   # validation sees the average
    with average.swapped():                    # the average in the model, e.g. to save it
        model.save(path)
    swa = averaging.WeightAverage(None, every=steps_per_epoch, start=first_step,
                                  batchnorm_images=images)   # each epoch end from first_step on

Polyak averaging as the short-schedule CIFAR-10 records use it (Page's ResNet-9, airbench's
lookahead): every `every` optimizer steps, average = decay * average + (1 - decay) * weights,
over every float weight, BatchNorm's moving mean and variance included (as a PyTorch
state_dict average includes its buffers), so the averaged kernels are never paired with
statistics measured on other kernels. Keras' own `use_ema` averages the trainable variables
only. The decay warms up as tf.train.ExponentialMovingAverage's `num_updates` does,
min(momentum, (1 + n) / (10 + n)) at the n-th update, so the first epochs' average is not
dominated by the random start. (tf.train.ExponentialMovingAverage has that rule, but its
shadow variables come into being at its first update, so a resumed run's average could
not be put in before it; the update here is one line.)

With momentum None the average is the plain mean of the weights at each update after step
`start`: stochastic weight averaging (Izmailov et al. 2018), which takes one snapshot an
epoch while the learning rate holds at a moderate value. A mean of kernels is not paired
with the mean of their BatchNorm statistics, so SWA recomputes them for the averaged
kernels from `batchnorm_images` (their update_bn); until the first update the "average"
is the trained weights.
"""
import contextlib
import zipfile

import keras
import numpy as np
import tensorflow as tf


def averaged_variables(model):
    """The variables averaged: every float weight (kernels, biases, BatchNorm's gamma, beta and
    moving statistics), not integer state such as a dropout layer's seed."""
    return [variable for variable in model.weights if "float" in str(variable.dtype)]


class WeightAverage(keras.callbacks.Callback):
    """Keeps the average during fit; swaps it into the model for validation.

    The update count is read from the optimizer's step counter, which the checkpoint
    restores, so a resumed run updates on the same steps with the same decay; the
    average itself travels through `save`/`load` (RunFolderCheckpoint writes it beside
    each checkpoint).
    """

    def __init__(self, momentum, every, start=0, batchnorm_images=None, batch_size=128):
        super().__init__()
        if momentum is not None and not 0 < momentum < 1:
            raise ValueError(f"momentum must lie in (0, 1) or be None (a plain mean), received {momentum!r}")
        for name, value, low in (("every", every, 1), ("start", start, 0), ("batch_size", batch_size, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, received {value!r}")
        self.momentum = momentum
        self.every = every
        self.start = start
        self.batchnorm_images = batchnorm_images  # SWA's: BatchNorm's statistics recomputed on them
        self.batch_size = batch_size
        self.updates = 0
        self._forward = None
        self._statistics = []  # indices into variables of BatchNorm's moving statistics (SWA's recompute)
        self.loaded = None  # arrays from a checkpoint, taken at the start of fit
        self.averages = None
        self._update = None
        self._trained = None  # the trained weights while validation runs on the average
        self.variables = None  # set_model's

    def set_model(self, model):
        super().set_model(model)
        self.variables = averaged_variables(model)

    def load(self, path):
        """Take the average saved by `save` (a resumed run's), to be used from the start of fit.

        ValueError if the file is not one, or does not fit the model (after set_model).
        """
        try:
            with np.load(path) as arrays:
                loaded = [arrays[f"arr_{index}"] for index in range(len(arrays.files))]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise ValueError(f"not a saved weight average ({error})") from None
        if self.variables is not None:
            self._check(loaded)
        self.loaded = loaded

    def _check(self, arrays):
        if len(arrays) != len(self.variables) or any(
                array.shape != tuple(variable.shape) for array, variable in zip(arrays, self.variables)):
            raise ValueError(f"{len(arrays)} arrays that do not match the model's {len(self.variables)} weights")

    def save(self, path):
        """Write the average to `path` as .npz (RunFolderCheckpoint gives it a temporary path, then renames it)."""
        with open(path, "wb") as handle:
            np.savez(handle, *self.values())

    def values(self):
        """The average as arrays (before fit: the loaded one, if any; before a plain mean's first
        update: the trained weights)."""
        if self.momentum is None and self.averages is not None and not self.updates:
            return self._snapshot()
        if self.averages is None:
            if self.loaded is None:
                raise ValueError("no average yet: fit has not started and none was loaded")
            return self.loaded
        return [np.asarray(keras.ops.convert_to_numpy(average)) for average in self.averages]

    def on_train_begin(self, logs=None):
        start = self.loaded if self.loaded is not None else self._snapshot()
        self._check(start)
        self.averages = [tf.Variable(array, trainable=False, dtype=variable.dtype)
                         for array, variable in zip(start, self.variables)]
        self.updates = self._updates_done()

        averages, variables = self.averages, [variable.value for variable in self.variables]

        @tf.function
        def update(decay):
            for average, variable in zip(averages, variables):
                average.assign(decay * average + (1 - decay) * variable)
        self._update = update
        if self.batchnorm_images is not None:
            model = self.model

            @tf.function
            def forward(images):  # training mode: each BatchNorm layer moves its statistics toward the batch's
                model(images, training=True)
            self._forward = forward
            # Which of the averaged variables are BatchNorm's moving statistics (recomputed, not averaged).
            statistics = {id(variable) for layer in model._flatten_layers()
                          if isinstance(layer, keras.layers.BatchNormalization)
                          for variable in (layer.moving_mean, layer.moving_variance)}
            self._statistics = [index for index, variable in enumerate(self.variables) if id(variable) in statistics]

    def _updates_done(self):
        steps = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        return max(steps - self.start, 0) // self.every

    def decay(self, update):
        """The decay of the `update`-th update (1-based): TensorFlow's num_updates warm-up, or for a
        plain mean (n - 1) / n."""
        if self.momentum is None:
            return (update - 1) / update
        return min(self.momentum, (1 + update) / (10 + update))

    def on_train_batch_end(self, batch, logs=None):
        # Counted from the step counter, which the checkpoint restores. An EMA needs one step a call
        # (train.py refuses --steps-per-execution > 1 with it); SWA's updates fall on epoch ends.
        due = self._updates_done()
        if self.updates >= due:
            return
        while self.updates < due:
            self.updates += 1
            self._update(tf.constant(self.decay(self.updates), tf.float32))
        if self._forward is not None:
            self._recompute_batchnorm()

    def _recompute_batchnorm(self):
        """Replace the average's BatchNorm statistics by those of its own kernels on batchnorm_images."""
        trained = self._snapshot()
        try:
            self._assign(self.values())
            for begin in range(0, len(self.batchnorm_images), self.batch_size):
                self._forward(tf.constant(self.batchnorm_images[begin:begin + self.batch_size]))
            for index in self._statistics:
                self.averages[index].assign(self.variables[index])
        finally:
            self._assign(trained)

    def _snapshot(self):
        return [variable.numpy() for variable in self.variables]

    def _assign(self, values):
        for variable, value in zip(self.variables, values):
            variable.assign(value)

    @contextlib.contextmanager
    def swapped(self):
        """The average in the model's weights inside the block, the trained weights back after it."""
        trained = self._snapshot()
        try:
            self._assign(self.values())
            yield
        finally:
            self._assign(trained)

    def on_test_begin(self, logs=None):  # fit's validation: on the average
        self._trained = self._snapshot()
        self._assign(self.values())

    def on_test_end(self, logs=None):
        self._assign(self._trained)
        self._trained = None

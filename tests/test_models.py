"""models.py: every registry model against the report's Figures 2-4, save/reload, weights errors."""
import keras
import numpy as np
import pytest

import models

# (total, frozen) from the report's Figures 2-4; "frozen" is what model.summary() calls
# non-trainable: BatchNorm's moving statistics, or the whole ImageNet base.
EXPECTED = {
    "vgg16": (1_186_346, 1_920),
    "alexnet": (2_915_338, 2_304),
    "vgg16_pretrained": (27_565_386, 14_714_688),
}


@pytest.fixture(scope="module", params=sorted(models.MODELS))
def built(request):
    return request.param, models.build_model(request.param, weights=None)


def test_registry_is_the_three_models():
    assert set(models.MODELS) == set(EXPECTED)


def test_output_shape_and_softmax(built):
    name, model = built
    assert model.name == name
    assert model.output_shape == (None, 10)
    assert model.input_shape == (None, 32, 32, 3)
    assert model.get_layer("predictions").activation is keras.activations.softmax
    assert not model.compiled


def test_exact_parameter_counts(built):
    name, model = built
    total, _, frozen = models.count_parameters(model)
    assert (total, frozen) == EXPECTED[name]


def test_layers_are_named(built):
    _, model = built
    generic = [layer.name for layer in model.layers
               if layer.name.split("_")[0] in ("conv2d", "dense", "dropout", "batch")]
    assert generic == []


def test_save_and_reload_predicts_the_same(built, tmp_path):
    _, model = built
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    before = model.predict(images, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), before, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(before.sum(axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("policy, tolerance", [("float32", 1e-5), ("mixed_bfloat16", 2e-2)])
def test_fused_batch_normalization_trains_as_keras_layer_does(policy, tolerance):
    """Outputs, gradients and moving statistics after two training steps, then inference."""
    import tensorflow as tf
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        ours = models.FusedBatchNormalization(momentum=0.9)
        theirs = keras.layers.BatchNormalization(momentum=0.9)
        rng = np.random.default_rng(0)
        images = [tf.cast(rng.normal(2.0, 3.0, size=(8, 6, 6, 5)), ours.compute_dtype) for _ in range(2)]
        for layer in (ours, theirs):
            layer.build(images[0].shape)
        theirs.set_weights([rng.normal(1.0, 0.5, size=w.shape) for w in theirs.get_weights()])
        ours.set_weights(theirs.get_weights())
        weight = tf.constant(rng.normal(size=images[0].shape), "float32")  # a loss that weighs each output apart
        for x in images:
            grads = []
            for layer in (ours, theirs):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = layer(x, training=True)
                    loss = tf.reduce_sum(tf.cast(y, "float32") * weight)
                grads.append([y, *tape.gradient(loss, [x, layer.gamma, layer.beta])])
                assert y.dtype == layer.compute_dtype
            for a, b in zip(*grads):
                a, b = np.asarray(tf.cast(a, "float32")), np.asarray(tf.cast(b, "float32"))
                np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance * np.abs(b).max())
        for a, b in zip(ours.non_trainable_weights, theirs.non_trainable_weights):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)
        np.testing.assert_allclose(tf.cast(ours(images[0]), "float32"), tf.cast(theirs(images[0]), "float32"),
                                   rtol=tolerance, atol=tolerance)
        graph = tf.function(lambda x: ours(x, training=True)).get_concrete_function(images[0]).graph
        assert "FusedBatchNormV3" in {op.type for op in graph.get_operations()}
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_vgg16_block_structure():
    model = models.build_vgg16()
    for block, (filters, rate) in enumerate(zip((32, 64, 128, 256), (0.2, 0.3, 0.4, 0.5)), start=1):
        assert model.get_layer(f"block{block}_conv1").filters == filters
        assert model.get_layer(f"block{block}_conv2").filters == filters
        assert model.get_layer(f"block{block}_dropout").rate == rate
    assert model.get_layer("block4_pool").output.shape[1:] == (2, 2, 256)


def test_alexnet_map_sizes_follow_figure_3():
    model = models.build_alexnet()
    assert model.get_layer("conv1").output.shape[1:] == (6, 6, 128)
    assert model.get_layer("pool1").output.shape[1:] == (3, 3, 128)
    assert model.get_layer("pool2").output.shape[1:] == (1, 1, 256)
    assert model.get_layer("pool3").output.shape[1:] == (1, 1, 256)


def test_dropout_rates_are_keyword_arguments():
    model = models.build_vgg16(dropout_rates=(0.1, 0.1, 0.1, 0.1))
    assert model.get_layer("block3_dropout").rate == 0.1
    assert models.build_alexnet(dropout_rates=(0.3, 0.2)).get_layer("fc2_dropout").rate == 0.2
    with pytest.raises(ValueError, match="needs 4 values"):
        models.build_vgg16(dropout_rates=(0.5,))


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="unknown model 'vgg61'; choose one of vgg16, alexnet, vgg16_pretrained"):
        models.build_model("vgg61")


def test_missing_weights_file_is_refused(tmp_path):
    with pytest.raises(models.WeightsError, match="does not exist"):
        models.build_vgg16_pretrained(weights=str(tmp_path / "none.h5"))


def test_local_weights_file_is_used(tmp_path):
    """A weights file saved from one base loads into the next: the offline route."""
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(224, 224, 3))
    path = str(tmp_path / "vgg16_notop.weights.h5")
    base.save_weights(path)
    model = models.build_vgg16_pretrained(weights=path)
    np.testing.assert_array_equal(model.get_layer("vgg16").get_layer("block1_conv1").get_weights()[0],
                                  base.get_layer("block1_conv1").get_weights()[0])


def test_imagenet_download_failure_says_how_to_pass_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty cache

    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -2] Name or service not known")
    # keras.applications.VGG16 downloads through keras.src.utils.file_utils.get_file.
    from keras.src.utils import file_utils
    monkeypatch.setattr(file_utils, "get_file", no_network)
    with pytest.raises(models.WeightsError, match="--weights PATH"):
        models.build_vgg16_pretrained(weights="imagenet")


def test_set_precision_policies():
    try:
        assert models.set_precision("mixed") == "mixed_bfloat16"
        assert models.set_precision("mixed", on_gpu=True) == "mixed_float16"
        model = models.build_vgg16()
        assert model.get_layer("block1_conv1").compute_dtype == "float16"
        assert model.output.dtype == "float32"
    finally:
        assert models.set_precision("float32") == "float32"
    with pytest.raises(ValueError, match="unknown precision"):
        models.set_precision("half")


def test_command_prints_the_summaries(capsys):
    # In-process: test_command_line.py runs one script as a user does, in a fresh interpreter.
    assert models.main(["vgg16", "alexnet"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 1,186,346" in out
    assert "Total params: 2,915,338" in out
    assert "block1_conv1 (Conv2D)" in out


def test_command_rejects_an_unknown_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        models.main(["vgg61"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("models.py: error: unknown model 'vgg61'; choose one of vgg16")


def test_the_whitening_kernel_whitens_the_patches_a_conv_layer_sees():
    # Correlated channels, as real pixels are; the kernel's layout is checked through Keras' own
    # convolution, not through the patch extraction that computed it.
    x = np.random.default_rng(0).normal(size=(40, 12, 12, 3)).astype("float32")
    x[..., 1] = 0.8 * x[..., 0] + 0.2 * x[..., 1]
    kernel = models.patch_whitening_kernel(x, (3, 3, 3, 32))
    conv = keras.layers.Conv2D(32, 3)
    conv.build(x.shape)
    conv.set_weights([kernel, np.zeros(32, "float32")])
    out = keras.ops.convert_to_numpy(conv(x)).reshape(-1, 32)
    # The 16 directions of most variance come out uncorrelated, of unit variance (less the
    # epsilon's share), and the other 16 filters are their negatives.
    np.testing.assert_allclose(np.cov(out[:, :16], rowvar=False), np.eye(16), atol=2e-3)
    np.testing.assert_allclose(out[:, 16:], -out[:, :16], atol=1e-5)


def test_a_dirac_kernel_passes_its_input_through_on_the_first_filters():
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 4)).astype("float32")
    conv = keras.layers.Conv2D(6, 3, padding="same", use_bias=False)
    conv.build(x.shape)
    random = keras.ops.convert_to_numpy(conv.kernel)
    conv.set_weights([models.dirac_kernel(random)])
    out = keras.ops.convert_to_numpy(conv(x))
    np.testing.assert_allclose(out[..., :4], x, atol=1e-6)
    np.testing.assert_array_equal(conv.get_weights()[0][..., 4:], random[..., 4:])  # the rest kept


def test_initialize_changes_the_named_convolutions_only():
    images = np.random.default_rng(2).normal(size=(20, 32, 32, 3)).astype("float32")
    model = models.build_model("vgg16")
    before = [weight.copy() for weight in model.get_weights()]
    assert models.initialize(model, "keras", images) == []
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    changed = models.initialize(model, "whiten-dirac", images)
    assert changed == [f"block{block}_conv{conv}" for block in range(1, 5) for conv in (1, 2)]
    assert models.count_parameters(model)[0] == 1_186_346
    assert not model.get_layer("block1_conv1").get_weights()[1].any()  # bias 0
    np.testing.assert_array_equal(model.get_layer("predictions").get_weights()[0], before[-2])
    alexnet = models.build_model("alexnet")
    assert models.initialize(alexnet, "whiten", images) == ["conv1"]  # 11x11 stride-4 patches

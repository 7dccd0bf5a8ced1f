"""evaluate.py: metrics computed from one prediction pass, consistent with each other and on disk."""
import json
import os

import numpy as np
import pytest

import data
import evaluate
import rundir
from cifar_fixtures import make_images

CONTRACT_KEYS = {"test_accuracy", "test_loss", "top5_accuracy", "per_class_accuracy", "confusion_matrix",
                 "predict_seconds", "load_seconds", "ms_per_image", "device", "batch_size", "test_images"}


def test_compute_metrics_by_hand():
    # Four images: true classes 0, 0, 1, 2. Predicted 0, 1, 1, 3; class 2 is second-best for the last.
    probabilities = np.full((4, 10), 0.01)
    for row, (best, second) in enumerate([(0, 1), (1, 0), (1, 2), (3, 2)]):
        probabilities[row, best], probabilities[row, second] = 0.6, 0.32
    labels = np.array([0, 0, 1, 2])
    metrics = evaluate.compute_metrics(probabilities, labels)
    assert metrics["test_accuracy"] == pytest.approx(0.5)
    assert metrics["top5_accuracy"] == pytest.approx(1.0)
    expected_loss = -np.mean(np.log([0.6, 0.32, 0.6, 0.32]))
    assert metrics["test_loss"] == pytest.approx(expected_loss)
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix[0, 0] == 1 and matrix[0, 1] == 1 and matrix[1, 1] == 1 and matrix[2, 3] == 1
    assert matrix.sum() == 4
    assert metrics["per_class_accuracy"]["airplane"] == pytest.approx(0.5)
    assert metrics["per_class_accuracy"]["bird"] == 0.0
    assert metrics["per_class_accuracy"]["truck"] is None  # no truck among the labels


def test_top5_stops_at_the_fifth_class_and_the_loss_clips_as_keras_does():
    # Class 9 ranked fifth for the first image (a hit), sixth for the second (a miss);
    # the third image's true class has probability 0, where Keras' loss clips at 1e-7.
    probabilities = np.zeros((3, 10))
    probabilities[:2, :6] = [0.3, 0.25, 0.2, 0.15, 0.06, 0.04]
    probabilities[0, [4, 9]] = probabilities[0, [9, 4]]
    probabilities[1, [5, 9]] = probabilities[1, [9, 5]]
    probabilities[2, 0] = 1.0
    metrics = evaluate.compute_metrics(probabilities, np.array([9, 9, 3]))
    assert metrics["top5_accuracy"] == pytest.approx(1 / 3)
    expected_loss = -np.mean(np.log([0.06, 0.04, 1e-7]))  # 36.0 for the last image without the clip
    assert metrics["test_loss"] == pytest.approx(expected_loss, rel=1e-6)


def test_evaluate_run_is_consistent_with_its_predictions(trained_vgg16, run_copy):
    import keras
    run = run_copy(trained_vgg16)
    x_test, y_test = make_images(160, seed=7)
    metrics = evaluate.evaluate_run(run, x_test, y_test, batch_size=32)

    model = keras.saving.load_model(os.path.join(run, rundir.MODEL_FILE))
    stats = data.load_stats(os.path.join(run, rundir.STATS_FILE))
    probabilities = model.predict(data.standardize(x_test, stats), batch_size=32, verbose=0)
    predicted = probabilities.argmax(axis=1)
    assert metrics["test_accuracy"] == pytest.approx(np.mean(predicted == y_test))
    keras_loss = float(np.mean(keras.ops.convert_to_numpy(
        keras.losses.categorical_crossentropy(data.one_hot(y_test), probabilities))))
    assert metrics["test_loss"] == pytest.approx(keras_loss, rel=1e-4)
    top5 = np.argsort(probabilities, axis=1)[:, -5:]  # the five most probable classes of each image
    assert metrics["top5_accuracy"] == pytest.approx(np.mean([label in row for label, row in zip(y_test, top5)]))

    assert metrics["test_images"] == 160
    expected = np.zeros((10, 10), int)
    np.add.at(expected, (y_test, predicted), 1)  # rows: the true class, columns: the predicted one
    np.testing.assert_array_equal(metrics["confusion_matrix"], expected)
    for index, name in enumerate(data.CLASS_NAMES):
        assert (y_test == index).any()  # every class is among the 160 images
        assert metrics["per_class_accuracy"][name] == pytest.approx(np.mean(predicted[y_test == index] == index))

    on_disk = json.load(open(os.path.join(run, rundir.METRICS_FILE)))
    assert CONTRACT_KEYS <= set(on_disk)
    assert on_disk["test_accuracy"] == metrics["test_accuracy"]
    assert on_disk["batch_size"] == 32 and on_disk["model"] == "vgg16"
    assert on_disk["predict_seconds"] > 0 and on_disk["load_seconds"] > 0
    assert not [name for name in os.listdir(run) if name.startswith(".") and name != rundir.LOCK_FILE]  # no temporary


def test_command_line_two_runs_prints_table_2(trained_vgg16, trained_alexnet, run_copy, cifar_dir, capsys):
    runs = [run_copy(trained_vgg16, "vgg16"), run_copy(trained_alexnet, "alexnet")]
    assert evaluate.main(runs + ["--data-dir", cifar_dir, "--limit", "200", "--batch-size", "100"]) == 0
    out = capsys.readouterr().out
    assert "Table 2" in out and "confusion matrix" in out
    table = out[out.index("Table 2"):].splitlines()
    for run, label in zip(runs, ["Scratch VGG16", "Scratch AlexNet"]):
        metrics = json.load(open(os.path.join(run, rundir.METRICS_FILE)))
        assert CONTRACT_KEYS <= set(metrics)
        assert metrics["test_images"] == 200 and metrics["batch_size"] == 100
        assert np.array(metrics["confusion_matrix"]).sum() == 200
        # Our columns: the run, Δt (s) to predict the test images, accuracy %; then the paper's two.
        line = next(line for line in table if line.startswith(label))
        run_name, seconds, accuracy = line[len(label):].split()[:3]
        assert run_name == os.path.basename(run)
        assert (seconds, accuracy) == (f"{metrics['predict_seconds']:.1f}", f"{100 * metrics['test_accuracy']:.1f}")


@pytest.mark.parametrize("remove", [None, rundir.MODEL_FILE, rundir.STATS_FILE])
def test_bad_run_folder_is_one_line(trained_vgg16, run_copy, tmp_path, capsys, remove):
    if remove is None:
        run = str(tmp_path / "no_such_run")
    else:
        run = run_copy(trained_vgg16)
        os.remove(os.path.join(run, remove))
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([run, "--data-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("evaluate.py: error: ") and len(err.strip().splitlines()) == 1
    assert (remove or "no_such_run") in err


def test_smoke_run_never_replaces_a_larger_evaluation(trained_vgg16, run_copy):
    run = run_copy(trained_vgg16)
    x_test, y_test = make_images(60, seed=3)
    full = evaluate.evaluate_run(run, x_test, y_test, batch_size=30)
    path = os.path.join(run, rundir.METRICS_FILE)
    smoke = evaluate.evaluate_run(run, x_test[:20], y_test[:20], batch_size=30)
    assert smoke["test_images"] == 20
    assert json.load(open(path)) == json.loads(json.dumps(full))  # the 60-image metrics are kept
    rundir.write_json(path, ["not", "metrics"])
    evaluate.evaluate_run(run, x_test[:20], y_test[:20], batch_size=30)
    assert json.load(open(path))["test_images"] == 20  # an unusable file is replaced


def test_tta_averages_each_image_with_its_mirror(trained_vgg16, run_copy, cifar_dir, capsys):
    import keras
    run = run_copy(trained_vgg16)
    x_test, y_test = make_images(96, seed=5)
    metrics = evaluate.evaluate_run(run, x_test, y_test, batch_size=32, tta="flip")
    assert metrics["tta_mode"] == "flip" and len(metrics["tta_views"]) == 2

    model = keras.saving.load_model(os.path.join(run, rundir.MODEL_FILE))
    stats = data.load_stats(os.path.join(run, rundir.STATS_FILE))
    x = data.standardize(x_test, stats)
    plain = model.predict(x, batch_size=32, verbose=0)
    mirror = model.predict(x[:, :, ::-1, :], batch_size=32, verbose=0)
    # The mirror is a different view: TTA must differ from predicting the image twice.
    assert np.abs(plain - mirror).max() > 1e-3
    averaged = (plain + mirror) / 2
    assert metrics["test_accuracy_tta"] == pytest.approx(np.mean(averaged.argmax(axis=1) == y_test))
    assert metrics["test_loss_tta"] == pytest.approx(
        -np.mean(np.log(np.clip(averaged[np.arange(96), y_test], 1e-7, 1))), rel=1e-4)
    assert metrics["test_accuracy"] == pytest.approx(np.mean(plain.argmax(axis=1) == y_test))
    assert json.load(open(os.path.join(run, rundir.METRICS_FILE)))["test_accuracy_tta"] == metrics["test_accuracy_tta"]

    assert evaluate.main([run, "--data-dir", cifar_dir, "--limit", "100", "--tta"]) == 0
    out = capsys.readouterr().out
    assert "with TTA (flip)" in out and "TTA %" in out
    written = json.load(open(os.path.join(run, rundir.METRICS_FILE)))
    line = next(line for line in out.splitlines() if line.startswith("Scratch VGG16"))
    assert f"{100 * written['test_accuracy_tta']:.1f}" == line.split()[-3]


def test_tta_flip_translate_weighs_six_views_as_airbench(trained_vgg16, run_copy):
    import keras
    run = run_copy(trained_vgg16)
    x_test, y_test = make_images(64, seed=6)
    metrics = evaluate.evaluate_run(run, x_test, y_test, batch_size=32, tta="flip-translate")

    model = keras.saving.load_model(os.path.join(run, rundir.MODEL_FILE))
    x = data.standardize(x_test, data.load_stats(os.path.join(run, rundir.STATS_FILE)))
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="symmetric")  # the edge pixel repeated
    down_right, up_left = padded[:, :32, :32], padded[:, 2:, 2:]
    assert np.array_equal(down_right[:, 1:, 1:], x[:, :31, :31]) and np.array_equal(up_left[:, :31, :31], x[:, 1:, 1:])

    def both(images):  # an image and its mirror, averaged
        return (model.predict(images, verbose=0) + model.predict(images[:, :, ::-1], verbose=0)) / 2
    expected = 0.5 * both(x) + 0.25 * both(down_right) + 0.25 * both(up_left)
    assert np.abs(expected - both(x)).max() > 1e-4  # the moved views change the average
    assert metrics["test_accuracy_tta"] == pytest.approx(np.mean(expected.argmax(axis=1) == y_test))
    assert metrics["test_loss_tta"] == pytest.approx(
        -np.mean(np.log(np.clip(expected[np.arange(64), y_test], 1e-7, 1))), rel=1e-4)
    assert metrics["tta_mode"] == "flip-translate" and len(metrics["tta_views"]) == 6


def test_an_unknown_tta_mode_is_one_line_before_any_data(trained_vgg16, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([trained_vgg16, "--data-dir", str(tmp_path / "nowhere"), "--tta", "rotate"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "evaluate.py: error: argument --tta: invalid choice: 'rotate'" in err and "Traceback" not in err
    # --tta before the folder: the folder is not taken for a mode.
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--tta", trained_vgg16, "--data-dir", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2 and f"invalid choice: '{trained_vgg16}'" in capsys.readouterr().err


def test_a_run_still_training_is_evaluated_with_a_note(trained_vgg16, run_copy, cifar_dir, capsys):
    run = run_copy(trained_vgg16)
    assert evaluate.main([run, "--data-dir", cifar_dir, "--limit", "50"]) == 0
    assert "still training" not in capsys.readouterr().err  # train.train finished the fixture's run
    config = json.load(open(os.path.join(run, rundir.CONFIG_FILE)))
    rundir.write_json(os.path.join(run, rundir.CONFIG_FILE), dict(config, status="running"))
    assert evaluate.main([run, "--data-dir", cifar_dir, "--limit", "50"]) == 0
    err = capsys.readouterr().err
    assert f"note: {run}: the run is still training or was interrupted" in err

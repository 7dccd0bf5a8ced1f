"""plots.py: valid, non-empty figures in PNG, PDF and SVG; a panel per network; Figure 1 from a data folder."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import data
import evaluate
import plots
import rundir
from cifar_fixtures import make_images

# The session's vgg16 run (conftest.trained_vgg16): ReduceLROnPlateau halves the rate after epoch 2.
VGG16_RATES = [5e-4, 5e-4, 2.5e-4]


@pytest.fixture(scope="module")
def runs(trained_vgg16, trained_alexnet, tmp_path_factory):
    """Copies of the session's runs: vgg16 (plateau, one real cut), evaluated; alexnet (cosine), not evaluated."""
    folder = tmp_path_factory.mktemp("plot_runs")
    vgg16 = shutil.copytree(trained_vgg16, str(folder / "vgg16"))
    alexnet = shutil.copytree(trained_alexnet, str(folder / "alexnet"))
    x_test, y_test = make_images(100, seed=6)
    evaluate.evaluate_run(vgg16, x_test, y_test, batch_size=50)
    return vgg16, alexnet


def _check_png(path, min_size=(600, 400)):
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        assert image.width >= min_size[0] and image.height >= min_size[1]
        assert np.asarray(image.convert("L")).std() > 5  # something is drawn, not a blank page


def test_png_figures_for_several_runs(runs, tmp_path, capsys):
    vgg16, alexnet = runs
    out = tmp_path / "figures"
    assert plots.main([vgg16, alexnet, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "alexnet" in printed and "confusion matrix skipped" in printed
    _check_png(out / "accuracy.png")
    _check_png(out / "loss.png")
    _check_png(os.path.join(vgg16, "confusion_matrix.png"), (600, 600))
    assert not os.path.exists(os.path.join(alexnet, "confusion_matrix.png"))
    assert sorted(os.listdir(out)) == ["accuracy.png", "loss.png"]  # no temporary files left
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(out / "loss.png").st_mode & 0o777 == 0o666 & ~mask  # readable as any saved file


def test_the_plateau_run_has_a_real_learning_rate_cut(runs):
    import results
    vgg16, _ = runs
    history = plots.read_history(vgg16)
    assert history["learning_rate"] == pytest.approx(VGG16_RATES)  # train.py's history, not a made-up one
    assert results.learning_rate_cuts(history) == [(3, pytest.approx(2.5e-4))]


def _draw_curves(runs, metric, tmp_path, monkeypatch):
    """plot_curves over the runs as make_plots draws them, into a figure we can inspect (nothing is saved)."""
    curves = [(label, plots.read_history(run), plots.run_schedule(run), rundir.model_name(run))
              for run, label in zip(runs, plots.curve_labels(runs))]
    captured = {}
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: captured.update(figure=figure))
    plots.plot_curves(curves, metric, str(tmp_path / f"{metric}.png"))
    return captured["figure"]


def test_curves_are_one_panel_per_network_over_a_thin_learning_rate_panel(runs, tmp_path, monkeypatch):
    vgg16, alexnet = runs
    figure = _draw_curves(runs, "accuracy", tmp_path, monkeypatch)
    vgg16_axes, alexnet_axes, vgg16_rates, alexnet_rates = figure.axes
    assert [axes.get_title() for axes in (vgg16_axes, alexnet_axes)] == ["vgg16", "alexnet"]
    # One legend for the figure: a colour per run, then what solid and dashed mean.
    labels = [text.get_text() for text in vgg16_axes.get_legend().get_texts()]
    assert labels == ["vgg16", "alexnet", "training", "validation"]
    history = json.load(open(os.path.join(vgg16, rundir.HISTORY_FILE)))
    training, validation = vgg16_axes.lines
    assert list(training.get_ydata()) == pytest.approx([100 * a for a in history["accuracy"]])
    assert list(validation.get_ydata()) == pytest.approx([100 * a for a in history["val_accuracy"]])
    assert (training.get_linestyle(), validation.get_linestyle()) == ("-", "--")
    assert training.get_color() != alexnet_axes.lines[0].get_color()
    # The plateau run's rate as steps on a log scale: its cut is a step between epochs 2 and 3.
    (rates,) = vgg16_rates.lines
    assert list(rates.get_ydata()) == pytest.approx(VGG16_RATES) and rates.get_drawstyle() == "steps-post"
    assert vgg16_rates.get_yscale() == "log" and vgg16_rates.get_xlabel() == "Epoch"
    assert vgg16_rates.get_position().height < vgg16_axes.get_position().height / 2  # the thin one
    assert "%" in vgg16_axes.get_ylabel() and vgg16_axes.get_ylim() == alexnet_axes.get_ylim()  # shared axis
    plots.pyplot().close(figure)


def test_a_run_with_no_hold_out_draws_no_validation_curve(runs, run_copy, tmp_path, monkeypatch):
    vgg16 = run_copy(runs[0])
    history = json.load(open(os.path.join(vgg16, rundir.HISTORY_FILE)))
    history.update(val_loss=[None] * len(history["epoch"]), val_accuracy=[None] * len(history["epoch"]))
    rundir.write_json(os.path.join(vgg16, rundir.HISTORY_FILE), history)  # as --validation-split 0 leaves it
    figure = _draw_curves([vgg16], "accuracy", tmp_path, monkeypatch)
    axes = figure.axes[0]
    (training,) = axes.lines
    assert list(training.get_ydata()) == pytest.approx([100 * a for a in history["accuracy"]])
    assert [text.get_text() for text in axes.get_legend().get_texts()][-1] == "training"
    assert figure.get_suptitle() == "Training accuracy per epoch"
    plots.pyplot().close(figure)


def test_curve_labels_name_the_recipe_a_run_trained(runs, run_copy, tmp_path):
    import dataclasses

    import recipes
    vgg16, _ = runs
    assert plots.curve_labels([vgg16]) == ["vgg16"]  # 3 epochs on 64 images: no recipe's settings
    copies = [run_copy(vgg16, name) for name in ("paper_a", "paper_b")]
    for copy in copies:
        config = json.load(open(os.path.join(copy, rundir.CONFIG_FILE)))
        settings = dataclasses.replace(recipes.recipe_settings("paper", "vgg16"), seed=0, weights=None)
        rundir.write_json(os.path.join(copy, rundir.CONFIG_FILE), dict(config, settings=dataclasses.asdict(settings)))
    assert plots.curve_labels(copies[:1] + [vgg16]) == ["paper", "vgg16"]
    assert plots.curve_labels(copies) == ["paper_a", "paper_b"]  # two runs of one recipe: their folders


@pytest.mark.parametrize("fmt,magic", [("pdf", b"%PDF"), ("svg", b"<?xml")])
def test_pdf_and_svg_by_format(runs, tmp_path, fmt, magic):
    out = tmp_path / "figures"
    assert plots.main([runs[0], "--out", str(out), "--format", fmt]) == 0
    for name in (f"accuracy.{fmt}", f"loss.{fmt}"):
        content = (out / name).read_bytes()
        assert content.startswith(magic) and len(content) > 5000
    assert os.path.getsize(os.path.join(runs[0], f"confusion_matrix.{fmt}")) > 5000


def test_save_figure_format_from_extension(tmp_path):
    plt = plots.pyplot()
    figure, axes = plt.subplots()
    axes.plot([0, 1], [1, 0])
    assert (open(plots.save_figure(figure, str(tmp_path / "x.svg")), "rb").read(200)).find(b"<svg") >= 0
    figure, _ = plt.subplots()
    with pytest.raises(rundir.UserError, match="unsupported"):
        plots.save_figure(figure, str(tmp_path / "x.gif"))
    assert os.listdir(tmp_path) == ["x.svg"]


def test_figure_1_grid_from_data_dir(runs, cifar_dir, tmp_path):
    out = tmp_path / "figures"
    assert plots.main([runs[1], "--out", str(out), "--data-dir", cifar_dir]) == 0
    _check_png(out / "cifar10_first48.png", (1000, 800))


def test_run_without_history_is_one_line(runs, run_copy, tmp_path, capsys):
    run = run_copy(runs[1])
    os.remove(os.path.join(run, rundir.HISTORY_FILE))
    with pytest.raises(SystemExit) as exit_info:
        plots.main([run, "--out", str(tmp_path / "figures")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("plots.py: error: ") and "history.json" in err and len(err.strip().splitlines()) == 1


def test_a_continuous_schedule_is_drawn_as_a_learning_rate_curve(runs, tmp_path, monkeypatch):
    vgg16, alexnet = runs
    rates = plots.read_history(alexnet)["learning_rate"]
    assert len(rates) == 3 and len(set(rates)) == 3  # the cosine run's rate changes every epoch
    figure = _draw_curves(runs, "loss", tmp_path, monkeypatch)
    (line,) = figure.axes[3].lines
    # Its warm-up starts at 0, which a log scale cannot place: left out, the rest as recorded.
    expected = [rate if rate > 0 else np.nan for rate in rates]
    np.testing.assert_allclose(line.get_ydata(), expected)
    assert list(line.get_xdata()) == [1, 2, 3]
    assert line.get_drawstyle() == "default" and figure.axes[1].get_ylabel() == ""
    assert "Loss" in figure.axes[0].get_ylabel() and figure.axes[2].get_ylabel() == "Learning\nrate"
    plots.pyplot().close(figure)


def test_confusion_matrix_shows_the_counts_with_class_names(runs, tmp_path, monkeypatch):
    metrics = json.load(open(os.path.join(runs[0], rundir.METRICS_FILE)))
    plt = plots.pyplot()
    captured = {}
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: captured.update(figure=figure))
    plots.plot_confusion_matrix(metrics, "vgg16", str(tmp_path / "c.png"))
    axes = captured["figure"].axes[0]
    matrix = np.array(metrics["confusion_matrix"])
    shown = {(round(text.get_position()[1]), round(text.get_position()[0])): text.get_text() for text in axes.texts}
    # Counts, not fractions: row = true class, column = predicted, as metrics.json stores them.
    assert shown == {(row, column): str(matrix[row, column]) for row in range(10) for column in range(10)}
    assert [label.get_text() for label in axes.get_xticklabels()] == list(data.CLASS_NAMES)
    assert [label.get_text() for label in axes.get_yticklabels()] == list(data.CLASS_NAMES)
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("Predicted class", "True class")
    assert axes.get_title().startswith("Confusion matrix: vgg16\ntest accuracy")
    assert captured["figure"].axes[1].get_ylabel() == "Test images"  # the colour bar
    plt.close(captured["figure"])


def test_run_schedule_reads_config(runs, tmp_path):
    vgg16, alexnet = runs
    assert plots.run_schedule(vgg16) == "plateau" and plots.run_schedule(alexnet) == "cosine"
    assert plots.run_schedule(str(tmp_path)) == "plateau"  # a folder without config.json: the report's


def test_a_record_folder_is_plotted_and_left_as_collected(runs, tmp_path, capsys):
    import results
    vgg16, _ = runs
    records = tmp_path / "results"
    record = results.collect(vgg16, str(records), name="vgg16_record")
    before = {name: open(os.path.join(record, name), "rb").read() for name in os.listdir(record)}
    out = tmp_path / "figures"
    assert plots.main([record, "--out", str(out)]) == 0
    _check_png(out / "accuracy.png")
    _check_png(out / "confusion_matrix_vgg16_record.png", (600, 600))
    after = {name: open(os.path.join(record, name), "rb").read() for name in os.listdir(record)}
    assert after == before  # no figure, nothing rewritten inside the record

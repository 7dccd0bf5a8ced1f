"""plots.py: valid, non-empty figures in PNG, PDF and SVG; LR drops found; Figure 1 from a data folder."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import data
import evaluate
import plots
import rundir
from run_fixtures import copy_run, trained_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A vgg16 run with a metrics.json and an alexnet run without one (private copies)."""
    base = tmp_path_factory.getbasetemp()
    folder = tmp_path_factory.mktemp("plot_runs")
    vgg16 = copy_run(trained_run("vgg16", base), folder / "vgg16")
    alexnet = copy_run(trained_run("alexnet", base), folder / "alexnet")
    probabilities = np.random.default_rng(0).dirichlet(np.ones(10), size=500)
    labels = np.random.default_rng(1).integers(0, 10, size=500)
    rundir.write_json(os.path.join(vgg16, rundir.METRICS_FILE), evaluate.compute_metrics(probabilities, labels))
    return vgg16, alexnet


def _check_png(path, min_size=(600, 400)):
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        assert image.width >= min_size[0] and image.height >= min_size[1]
        assert np.asarray(image.convert("L")).std() > 5  # something is drawn, not a blank page


def test_lr_reductions():
    history = {"epoch": [1, 2, 3, 4, 5], "learning_rate": [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4]}
    assert plots.lr_reductions(history) == [3, 5]
    assert plots.lr_reductions({"epoch": [1, 2]}) == []


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


def test_curves_legend_and_lr_marker(runs, tmp_path, monkeypatch):
    # Draw into a figure we can inspect: one solid and one dashed line per run, one LR marker each.
    vgg16, alexnet = runs
    curves = [(plots.run_label(run), plots.read_history(run), plots.run_schedule(run)) for run in runs]
    plt = plots.pyplot()
    captured = {}
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: captured.update(figure=figure))
    plots.plot_curves(curves, "accuracy", str(tmp_path / "a.png"))
    axes = captured["figure"].axes[0]
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert labels == ["vgg16 training", "vgg16 validation", "alexnet training", "alexnet validation",
                      "learning rate reduced"]
    history = json.load(open(os.path.join(vgg16, rundir.HISTORY_FILE)))
    assert list(axes.lines[0].get_ydata()) == pytest.approx([100 * a for a in history["accuracy"]])
    drops = [line for line in axes.lines if line.get_linestyle() == ":" and len(line.get_xdata())]
    # One marker a run, between the last epoch at the old rate and the first at the new one.
    assert len(drops) == 2 and drops[0].get_xdata()[0] == plots.lr_reductions(history)[0] - 0.5
    assert "%" in axes.get_ylabel() and axes.get_xlabel() == "Epoch"
    plt.close(captured["figure"])


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


def test_run_without_history_is_one_line(runs, tmp_path, capsys):
    run = copy_run(runs[1], tmp_path / "run")
    os.remove(os.path.join(run, rundir.HISTORY_FILE))
    with pytest.raises(SystemExit) as exit_info:
        plots.main([run, "--out", str(tmp_path / "figures")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("plots.py: error: ") and "history.json" in err and len(err.strip().splitlines()) == 1


def test_a_continuous_schedule_is_drawn_as_a_learning_rate_curve(runs, tmp_path, monkeypatch):
    vgg16, alexnet = runs
    history = plots.read_history(vgg16)
    rates = [0.02, 0.1, 0.06, 0.0]  # a warm-up and a cosine, per epoch
    cosine = {key: (value + value[-1:])[:4] if isinstance(value, list) else value for key, value in history.items()}
    cosine.update(epoch=[1, 2, 3, 4], learning_rate=rates)
    plt = plots.pyplot()
    captured = {}
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: captured.update(figure=figure))
    plots.plot_curves([("fast", cosine, "cosine"), ("paper", history, "plateau")], "loss", str(tmp_path / "l.png"))
    main_axes, rate_axes = captured["figure"].axes
    assert list(rate_axes.lines[0].get_ydata()) == rates and list(rate_axes.lines[0].get_xdata()) == [1, 2, 3, 4]
    assert "Learning rate" in rate_axes.get_ylabel()
    labels = [text.get_text() for text in main_axes.get_legend().get_texts()]
    assert "fast learning rate (right axis)" in labels and "learning rate reduced" in labels
    # The cosine run's falling rate is not mistaken for plateau cuts: only the paper run has markers.
    drops = [line for line in main_axes.lines if line.get_linestyle() == ":" and len(line.get_xdata())]
    assert len(drops) == len(plots.lr_reductions(history))
    plt.close(captured["figure"])


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
    vgg16, _ = runs
    assert plots.run_schedule(vgg16) == "plateau"  # the fixture's settings name no schedule
    rundir.write_json(str(tmp_path / rundir.CONFIG_FILE), {"model": "vgg16", "settings": {"schedule": "cosine"}})
    assert plots.run_schedule(str(tmp_path)) == "cosine"

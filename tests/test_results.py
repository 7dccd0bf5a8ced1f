"""results.py: records copied from real run folders, and the README's table built from them."""
import json
import os
import shutil

import pytest

import evaluate
import results
import rundir
from cifar_fixtures import make_images


@pytest.fixture(scope="module")
def evaluated_run(trained_alexnet, tmp_path_factory):
    """A copy of the session's alexnet run, evaluated (with TTA) as results.py requires."""
    run = shutil.copytree(trained_alexnet, str(tmp_path_factory.mktemp("results_runs") / "alexnet_short"))
    x_test, y_test = make_images(64, seed=4)
    evaluate.evaluate_run(run, x_test, y_test, batch_size=32, tta=True)
    return run


def test_collect_copies_the_three_records_and_table_reads_them(evaluated_run, tmp_path, capsys):
    out = tmp_path / "results"
    assert results.main(["--results-dir", str(out), "collect", evaluated_run]) == 0
    record = out / "alexnet_short"
    assert sorted(os.listdir(record)) == sorted(results.RECORD_FILES)  # no model, no temporaries
    for name in results.RECORD_FILES:
        assert json.load(open(record / name)) == json.load(open(os.path.join(evaluated_run, name)))
    capsys.readouterr()

    # Change the record: the table must follow the files, not the run folder.
    metrics = json.load(open(record / rundir.METRICS_FILE))
    metrics.update(test_accuracy=0.8765, test_accuracy_tta=0.8899)
    rundir.write_json(str(record / rundir.METRICS_FILE), metrics)
    assert results.main(["--results-dir", str(out), "table"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| record | command |") and len(lines) == 3
    config = json.load(open(record / rundir.CONFIG_FILE))
    row = lines[2]
    assert "`alexnet_short`" in row and "87.65 %" in row and "88.99 %" in row and config["device"] in row
    assert "`python train.py alexnet" in row and f"| {config['epochs_completed']} |" in row


@pytest.mark.parametrize("case, message", [
    ("running", "the run is not complete"),
    ("unevaluated", "no metrics.json; run evaluate.py on it first"),
    ("missing", "does not exist"),
])
def test_collect_refuses_unfinished_or_unevaluated_runs(evaluated_run, run_copy, tmp_path, capsys, case, message):
    run = str(tmp_path / "missing_run")
    if case != "missing":
        run = run_copy(evaluated_run)
    if case == "running":
        config = json.load(open(os.path.join(run, rundir.CONFIG_FILE)))
        rundir.write_json(os.path.join(run, rundir.CONFIG_FILE), dict(config, status="running"))
    if case == "unevaluated":
        os.remove(os.path.join(run, rundir.METRICS_FILE))
    with pytest.raises(SystemExit) as raised:
        results.main(["--results-dir", str(tmp_path / "results"), "collect", run])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "results") or os.listdir(tmp_path / "results") == []  # no record


def test_table_of_an_empty_folder_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        results.main(["--results-dir", str(tmp_path), "table"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "holds no run records" in err and err.count("\n") == 1 and "Traceback" not in err

"""Every script's bad input, a mistyped flag included, is one line `SCRIPT: error: ...`, exit 2."""
import importlib
import os
import subprocess
import sys

import pytest

import rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each script's required positionals, so that argparse gets as far as the unknown flag.
POSITIONALS = {"data": [], "models": [], "train": ["vgg16"], "evaluate": ["runs/x"],
               "predict_image": ["runs/x", "photo.jpg"], "plots": ["runs/x"], "bench": [], "results": ["table"]}


@pytest.mark.parametrize("script", list(POSITIONALS))
def test_an_unknown_flag_is_one_line_and_exit_2(script, capsys):
    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as exit_info:
        module.main([*POSITIONALS[script], "--bogus"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == f"{script}.py: error: unrecognized arguments: --bogus\n"  # no usage block
    assert captured.out == ""


@pytest.mark.parametrize("script, argv, message", [
    ("results", ["collect"], "results.py collect: error: the following arguments are required: RUN_DIR"),
    ("bench", ["--images", "0"], "bench.py: error: argument --images: expected a positive integer, received 0"),
    ("plots", ["runs/x", "--format", "gif"], "plots.py: error: argument --format: invalid choice: 'gif'"),
])
def test_other_usage_errors_are_one_line_too(script, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(script).main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_as_a_user_runs_it():
    result = subprocess.run([sys.executable, "evaluate.py", "runs/x", "--bogus"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "evaluate.py: error: unrecognized arguments: --bogus\n"


def test_one_line_errors_as_a_decorator_and_a_context_manager(capsys):
    @rundir.one_line_errors("tool.py")
    def main(fail):
        if fail:
            raise rundir.UserError("bad value 'x'\nsecond line")
        return 0
    assert main(False) == 0
    with pytest.raises(SystemExit) as exit_info:
        main(True)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "tool.py: error: bad value 'x'\n"
    with pytest.raises(SystemExit), rundir.one_line_errors("tool.py"):
        raise rundir.UserError("again")
    assert capsys.readouterr().err == "tool.py: error: again\n"
    # Anything else is a bug of ours: it keeps its type and traceback.
    with pytest.raises(KeyError), rundir.one_line_errors("tool.py"):
        raise KeyError("ours")
    assert capsys.readouterr().err == ""

"""The repository's promises: CI runs the README's test command, every script has --help, documented."""
import importlib
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["data", "models", "train", "evaluate", "predict_image", "plots", "bench", "results"]


def read(name):
    with open(os.path.join(ROOT, name)) as handle:
        return handle.read()


def test_ci_runs_the_readme_test_command():
    readme_commands = re.findall(r"^(python -m pip install .*pytest.*)$", read("README.md"), re.MULTILINE)
    assert len(readme_commands) == 1, readme_commands
    ci_commands = [line for line in read(".ci/run").splitlines() if line and not line.startswith("#")]
    assert readme_commands[0] in ci_commands


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_has_help_and_is_in_the_readme(script, capsys):
    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out
    assert f"python {script}.py" in read("README.md")


@pytest.mark.parametrize("script", SCRIPTS)
def test_importing_a_script_runs_nothing(script, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a script that ran would write here: runs/, bench.json, results/...
    importlib.reload(importlib.import_module(script))
    captured = capsys.readouterr()
    assert captured.out == ""
    assert os.listdir(tmp_path) == []


def test_no_committed_record_or_doc_holds_a_path_of_the_machine_that_made_it():
    """Records and docs travel: a reader's machine has no /tmp/cifar10 or /work/main of ours."""
    import subprocess
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    machine_path = re.compile(r"(?<![\w.])/(?:tmp|work|root|home|Users)/[\w.-]+")
    found = []
    for name in files:
        if name.endswith((".json", ".md", ".txt")) or name.startswith("results/pilots/"):
            for number, line in enumerate(read(name).splitlines(), start=1):
                if machine_path.search(line):
                    found.append(f"{name}:{number}: {line.strip()[:80]}")
    assert not found, found


def _our_imports():
    """{module: the modules of ours it imports, anywhere in it} for every .py file at the top level."""
    import ast
    ours = {name[:-3] for name in os.listdir(ROOT) if name.endswith(".py")}
    graph = {}
    for module in ours:
        tree = ast.parse(read(module + ".py"))
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
        graph[module] = found & ours - {module}
    return graph


def test_the_import_tree_has_no_circle_and_rundir_is_the_ground_floor():
    graph = _our_imports()
    assert graph["rundir"] == set()  # rundir.py imports no module of ours
    assert {"recipes", "checkpoint"} <= graph["train"]

    def reaches(start, target, seen=()):
        return any(step == target or (step not in seen and reaches(step, target, (*seen, step)))
                   for step in graph[start])
    circles = sorted(module for module in graph if reaches(module, module))
    assert not circles, f"modules that import themselves through others: {circles}"


def test_no_file_outgrows_a_room():
    sizes = {name: len(read(name).splitlines()) for name in os.listdir(ROOT) if name.endswith(".py")}
    assert sizes["train.py"] <= 600, sizes["train.py"]
    assert max(sizes.values()) <= 700, sizes


def test_no_file_tells_how_the_work_went():
    """Docs, code and records describe the project as it is; how it was built is git history's."""
    import subprocess
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    ordinal = r"(\d+(st|nd|rd|th)|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth)"
    story = re.compile(ordinal + r" (working )?session|working session|\bissue \d+|\bour machines?\b|as it first stood",
                       re.IGNORECASE)
    found = []
    for name in files:
        if (name.endswith((".py", ".md", ".json", ".txt")) or name.startswith(".ci/")) and name != \
                "tests/test_repository.py":  # this test's own pattern
            for number, line in enumerate(read(name).splitlines(), start=1):
                if story.search(line):
                    found.append(f"{name}:{number}: {line.strip()[:80]}")
    assert not found, found

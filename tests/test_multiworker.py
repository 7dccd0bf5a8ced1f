"""train.py --distribute multiworker: two worker processes on 127.0.0.1, one run folder, the chief's."""
import json
import os
import socket
import subprocess
import sys

import keras

import rundir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_ports(count):
    """`count` distinct free TCP ports on 127.0.0.1 (held open together, so no two are the same)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for held in sockets:
            held.bind(("127.0.0.1", 0))
        return [held.getsockname()[1] for held in sockets]
    finally:
        for held in sockets:
            held.close()


def test_multiworker_run_is_written_once_by_the_chief(cifar_dir, tmp_path):
    """Worker 0 (the chief) and worker 1 train one epoch together, as on two hosts.

    Each worker gets its own --run-dir path and temporary folder, as two hosts have their
    own disks: the chief's run folder must be complete and loadable, and worker 1 must leave
    nothing, neither its run folder nor the scratch folder it writes its copies into.
    """
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = []
    try:
        for index in range(2):
            host = tmp_path / f"host{index}"
            (host / "tmp").mkdir(parents=True)
            env = dict(os.environ, PYTHONUNBUFFERED="1", TMPDIR=str(host / "tmp"),
                       TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
            argv = [sys.executable, "train.py", "alexnet", "--distribute", "multiworker", "--data-dir", cifar_dir,
                    "--run-dir", str(host / "run"), "--epochs", "1", "--limit", "64", "--batch-size", "32",
                    "--seed", "1", "--augmentation", "none"]
            log = open(host / "log.txt", "w")
            workers.append((subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        for process, log in workers:
            process.wait(timeout=600)  # a guard against a hung cluster, not a speed check
            log.close()
    finally:
        for process, log in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    logs = [(tmp_path / f"host{index}" / "log.txt").read_text() for index in range(2)]
    for (process, _), text in zip(workers, logs):
        assert process.returncode == 0, text
        assert "strategy multiworker (2 replica(s))" in text  # one cluster, not two single runs

    chief_dir = tmp_path / "host0" / "run"
    assert sorted(os.listdir(chief_dir)) == sorted([rundir.LOCK_FILE, rundir.MODEL_FILE, rundir.STATS_FILE,
                                                    rundir.CONFIG_FILE, rundir.HISTORY_FILE])
    # The lock names the process that held the folder while writing it: worker 0.
    assert (chief_dir / rundir.LOCK_FILE).read_text().strip() == str(workers[0][0].pid)
    config = json.loads((chief_dir / rundir.CONFIG_FILE).read_text())
    assert config["status"] == "complete" and config["epochs_completed"] == 1
    assert config["strategy"] == {"name": "multiworker", "replicas": 2}
    for key in ("settings", "data_source", "device", "versions", "parameters", "split", "started", "finished",
                "train_seconds", "best_epoch", "model_epoch", "callbacks"):
        assert key in config, key
    settings = config["settings"]  # what the command line gave, as resolved and saved
    assert (settings["epochs"], settings["limit"], settings["batch_size"], settings["seed"]) == (1, 64, 32, 1)
    assert settings["distribute"] == "multiworker" and settings["augmentation"] == "none"
    history = json.loads((chief_dir / rundir.HISTORY_FILE).read_text())
    assert history["epoch"] == [1]
    assert set(history) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate",
                            "epoch_seconds", "phase"}
    model = keras.saving.load_model(str(chief_dir / rundir.MODEL_FILE))
    assert model.name == "alexnet" and model.count_params() == config["parameters"] == 2_915_338

    assert not (tmp_path / "host1" / "run").exists()  # worker 1 never touched its run folder
    assert os.listdir(tmp_path / "host1" / "tmp") == []  # and removed its scratch folder
    assert "Traceback" not in logs[1]

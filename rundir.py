"""The run folder: the files train.py leaves and every other script reads, written safely.

A run folder (default `runs/<model>/`) is self-sufficient:

    model.keras    the best model by val_loss (or, on a cosine or linear schedule, the last epoch),
                   loadable by keras.saving.load_model once models.py is imported (it
                   registers the ImageNet preprocessing layer, the classifier-scaled
                   optimizers and the linear schedule a model.keras may name)
    stats.json     the standardization statistics the model was trained with
    config.json    every resolved setting, data source, versions, device
    history.json   per-epoch metrics, learning rate and seconds
    metrics.json   written by evaluate.py

Every write goes to a temporary file in the same folder, is flushed to disk, then
renamed over the target, so a crash or kill mid-write leaves the previous complete file.

Every script also reports bad input here, the same way: `ArgumentParser` for usage errors
and `one_line_errors` around `main` for a UserError, each one line `prog: error: ...`
on stderr and exit status 2:

    @rundir.one_line_errors("plots.py")
    def main(argv=None):
        args = rundir.ArgumentParser(prog="plots.py", ...).parse_args(argv)
"""
import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile

# TensorFlow's C++ logging, set before TensorFlow loads (a value the user set wins). Level 2
# drops its info and warnings (CPU flags and the like) and keeps errors. On Linux without
# NVIDIA's driver the one error at start-up is TensorFlow's failed probe for CUDA ("failed
# call to cuInit ... (303)"), so level 3 there; where the driver is installed (or WSL's GPU
# device) a failing GPU still says why, and train.py's device line always names what was found.
# The first lines TensorFlow prints ("All log messages before absl::InitializeLog()", oneDNN,
# "cudart_stub.cc ... Could not find cuda drivers") come before its logging reads any setting.
_NO_NVIDIA_DRIVER = sys.platform.startswith("linux") and not any(
    os.path.exists(path) for path in ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if _NO_NVIDIA_DRIVER else "2")

MODEL_FILE = "model.keras"
STATS_FILE = "stats.json"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"


class UserError(Exception):
    """A problem with what the user gave us: reported as one line, exit status 2."""


def fail(prog, error):
    """Print `prog: error: message` on stderr and exit with status 2 (no traceback)."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, `prog: error: message`, exit status 2.

    argparse's own prints the usage block first; we drop it so that a mistyped flag
    looks like every other bad input (--help still prints the usage). Subparsers made
    by add_subparsers are of this class too.
    """

    def error(self, message):
        fail(self.prog, message)


@contextlib.contextmanager
def one_line_errors(prog):
    """Turn a UserError raised inside into `prog: error: message` on stderr and exit status 2.

    A context manager (`with rundir.one_line_errors("plots.py"): ...`) that also decorates
    a script's main (`@rundir.one_line_errors("plots.py")`); other exceptions pass through
    with their traceback, since they are our bugs, not the user's mistakes.
    """
    try:
        yield
    except UserError as error:
        fail(prog, error)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; once the block succeeds, it replaces `path`.

    The temporary file is on the same file system (so the rename is atomic), flushed to
    disk first, and given the usual permissions of a new file (mkstemp's are 0600). On
    an error, or a kill mid-write, `path` keeps its previous complete content.
    """
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=os.path.splitext(base)[1] or ".tmp",
                                   dir=folder)
    os.close(handle)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
        try:  # make the rename itself durable where the platform allows it
            descriptor = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError:
            pass
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


LOCK_FILE = ".lock"  # in a run folder: locked by the train.py that is writing it


class RunLock:
    """An exclusive lock on a run folder for the life of one train.py.

    The operating system holds it for the process (fcntl.flock on POSIX, msvcrt.locking on
    Windows), so a process that dies for any reason, SIGKILL included, leaves nothing that
    blocks a later --resume: the file may stay, the lock does not.
    """

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_FILE)
        self.handle = None

    def acquire(self):
        """Take the lock, or raise UserError naming the folder (and the holder's pid) if in use."""
        handle = open(self.path, "a+")
        try:
            if os.name == "nt":
                import msvcrt
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise UserError(f"run folder '{self.run_dir}' is in use by another train.py"
                            + (f" (pid {holder})" if holder.isdigit() else "")
                            + "; wait for it to finish or choose another --run-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle
        return self

    def release(self):
        """Let the lock go (closing the file does it); the file stays, harmlessly."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def write_json(path, obj):
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as handle:
            json.dump(obj, handle, indent=2)
            handle.write("\n")


def read_json(path, what):
    """Read a run-folder JSON file; a missing or malformed one is a UserError naming it."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise UserError(f"{path}: missing ({what})") from None
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not readable JSON ({what}): {error}") from None


def save_model(model, path, **kwargs):
    """model.save(path), atomically: the previous model survives a crash mid-save."""
    with atomic_path(path) as tmp:
        model.save(tmp, **kwargs)


def model_name(run_dir):
    """The run's model name from config.json, else the folder's name (config.json is optional to readers)."""
    config_path = os.path.join(run_dir, CONFIG_FILE)
    if os.path.isfile(config_path):
        config = read_json(config_path, "the run's configuration")
        if isinstance(config, dict) and config.get("model"):
            return str(config["model"])
    return os.path.basename(os.path.normpath(run_dir))


def check_run_dir(run_dir):
    """A UserError unless `run_dir` is an existing folder."""
    if not os.path.isdir(run_dir):
        raise UserError(f"run folder '{run_dir}' does not exist")


def device_description():
    """The device TensorFlow computes on, in words: 'GPU: NVIDIA H100 ...', 'CPU', 'GPU (Metal)'."""
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        extension = cpu_vector_extension()  # two "AMD EPYC" machines here differed 4-5x in speed by it
        return f"CPU ({cpu_description()[0]}, {os.cpu_count()} cores{', ' + extension if extension else ''})"
    names = []
    for gpu in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(gpu).get("device_name") or gpu.name)
        except Exception:  # Metal's plugin reports no details
            names.append(gpu.name)
    return f"{len(gpus)} GPU: " + ", ".join(names)


def cpu_vector_extension():
    """The CPU's widest vector extension from /proc/cpuinfo's flags, in words, or None where unknown.

    'AVX-512 BF16' (or 'AMX') is where bfloat16 is native; 'AVX-512'; 'AVX2'. This, more
    than the model name, sets a CPU's training speed: a 2-core AMD EPYC with AVX2 only took
    5.7 min a float32 vgg16 epoch where one with AVX-512 BF16 took 1.1-1.4 (docs/performance.md).
    """
    flags = _cpuinfo()[1] or set()
    for flag, name in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"),
                       ("avx2", "AVX2")):
        if flag in flags:
            return name
    return None


def _cpuinfo():
    """(model name, set of flags) from /proc/cpuinfo; flags None where it does not exist (not Linux)."""
    model, flags = platform.processor() or platform.machine(), None
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:  # not Linux
        pass
    return model, flags


def cpu_description():
    """(CPU model name, whether it has AVX-512 BF16 or AMX-BF16), from /proc/cpuinfo on Linux.

    The second value is None where /proc/cpuinfo does not exist (macOS, Windows): unknown.
    """
    model, flags = _cpuinfo()
    return model, None if flags is None else bool(flags & {"avx512_bf16", "amx_bf16"})

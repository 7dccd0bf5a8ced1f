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
A write that fails (a full disk, no permission, a read-only or vanished folder) is a
WriteError naming the file, the cause and what to do; a file read back that is
truncated, damaged or of another type is a UserError naming the file and what is wrong.

Every script also reports bad input here, the same way: `ArgumentParser` for usage errors
and `one_line_errors` around `main` for a UserError, each one line `prog: error: ...`
on stderr and exit status 2:

    @rundir.one_line_errors("plots.py")
    def main(argv=None):
        args = rundir.ArgumentParser(prog="plots.py", ...).parse_args(argv)
"""
import argparse
import contextlib
import errno
import json
import os
import platform
import shutil
import sys
import tempfile
import zipfile

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


class WriteError(UserError):
    """A file could not be written: `problem` names it and the cause, `remedy` what to do first.

    Told as `problem; remedy, then run it again`; train.py tells instead how to resume.
    """

    def __init__(self, problem, remedy):
        self.problem, self.remedy = problem, remedy
        super().__init__(f"{problem}; {remedy}, then run it again")


# errno -> (the cause in words, what the user does about it)
_WRITE_CAUSES = {
    errno.ENOSPC: ("no space left on the device", "free some space"),
    errno.EDQUOT: ("disk quota exceeded", "free some space"),
    errno.EACCES: ("permission denied", "make the folder writable"),
    errno.EPERM: ("permission denied", "make the folder writable"),
    errno.EROFS: ("read-only file system", "make it writable"),
    errno.ENOENT: ("its folder does not exist", "create the folder"),
}


def write_error(path, error):
    """The WriteError for an OSError met while writing `path`."""
    cause, remedy = _WRITE_CAUSES.get(error.errno, (error.strerror or str(error), "check the disk"))
    return WriteError(f"{path}: cannot be written ({cause})", remedy)


@contextlib.contextmanager
def writing(path):
    """Turn an OSError raised inside into a WriteError naming `path`."""
    try:
        yield
    except OSError as error:
        raise write_error(path, error) from None


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; once the block succeeds, it replaces `path`.

    The temporary file is on the same file system (so the rename is atomic), flushed to
    disk first, and given the usual permissions of a new file (mkstemp's are 0600). On
    an error, or a kill mid-write, `path` keeps its previous complete content and the
    temporary file goes; an OSError (in the block too) is a WriteError naming `path`.
    """
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    with writing(path):
        handle, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=os.path.splitext(base)[1] or ".tmp",
                                       dir=folder)
        os.close(handle)
    try:
        with writing(path):
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
        with contextlib.suppress(OSError):
            os.remove(tmp)


class SpaceError(WriteError):
    """Too little free space for what is about to be written: nothing of it was written."""


def free_bytes(folder):
    """The bytes a user may still write in `folder`'s file system."""
    return shutil.disk_usage(folder).free


def check_free_space(folder, need, what, remedy="free some space", unit="MB", prefix=""):
    """A SpaceError before writing `need` bytes (`what`) into `folder` when its disk has less free.

    The line gives both amounts in `unit` (MB or GB) and in bytes.
    """
    free = free_bytes(folder)
    if free < need:
        scale = {"MB": 1e6, "GB": 1e9}[unit]
        raise SpaceError(f"{prefix}'{folder}' has {free / scale:.2f} {unit} free and {what} needs "
                         f"{need / scale:.2f} {unit} ({need:,} bytes needed, {free:,} free)", remedy)
    return free


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
        try:  # unbuffered, and only to tell a refused second writer who holds it: a full disk skips it
            os.ftruncate(handle.fileno(), 0)
            os.write(handle.fileno(), f"{os.getpid()}\n".encode())
        except OSError:
            pass
        self.handle = handle
        return self

    def release(self):
        """Let the lock go (closing the file does it); the file stays, harmlessly."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def write_json(path, obj):
    """Write `obj` as indented JSON, atomically; a failed write is a WriteError naming `path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as handle:
            json.dump(obj, handle, indent=2)
            handle.write("\n")


def _read_problem(path, error):
    """What is wrong with a file that exists but cannot be read, in words."""
    if isinstance(error, IsADirectoryError):
        return "a folder, not a file"
    return f"cannot be read ({error.strerror or error})"


def read_json(path, what, kind=dict):
    """Read a run-folder JSON file of type `kind` (an object by default).

    A missing, unreadable, truncated or unparseable file, or one holding another type,
    is a UserError naming it and what is wrong.
    """
    try:
        with open(path) as handle:
            value = json.load(handle)
    except FileNotFoundError:
        raise UserError(f"{path}: missing ({what})") from None
    except OSError as error:
        raise UserError(f"{path}: {_read_problem(path, error)} ({what})") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise UserError(f"{path}: damaged or truncated JSON ({what}): {error}") from None
    if not isinstance(value, kind):
        raise UserError(f"{path}: not {what}: a JSON {type(value).__name__} where "
                        f"{'an object' if kind is dict else 'a ' + kind.__name__} was expected")
    return value


KERAS_MEMBERS = ("config.json", "model.weights.h5")  # what every .keras archive holds


def check_archive(path, what, kind=".keras file", members=KERAS_MEMBERS):
    """A UserError naming `path` unless it is a whole zip archive holding `members`.

    Reads the archive's directory only (at its end, so a truncated file fails here): a
    check in milliseconds before a load that would fail with a zipfile traceback or, in
    Keras, a misleading "File not found".
    """
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except FileNotFoundError:
        raise UserError(f"{path}: missing ({what})") from None
    except OSError as error:
        raise UserError(f"{path}: {_read_problem(path, error)} ({what})") from None
    except (zipfile.BadZipFile, EOFError, ValueError):
        if magic and not magic.startswith(b"PK"):
            raise UserError(f"{path}: not a {kind}, or damaged at its start ({what})") from None
        raise UserError(f"{path}: damaged or truncated {kind} ({what})") from None
    missing = [name for name in members if name not in names]
    if missing:
        raise UserError(f"{path}: not a {kind} ({what}): it holds no {missing[0]}")


def save_model(model, path, **kwargs):
    """model.save(path), atomically: the previous model survives a crash or a failed save."""
    with atomic_path(path) as tmp:
        model.save(tmp, **kwargs)


def load_weights(model, path, what):
    """model.load_weights(path) from a .keras file; a missing, damaged or unfitting file is a UserError."""
    check_archive(path, what)
    try:
        model.load_weights(path)
    except OSError as error:
        raise UserError(f"{path}: {_read_problem(path, error)} ({what})") from None
    except (ValueError, KeyError) as error:  # Keras and h5py say "does not fit" both ways
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{path}: does not fit the {model.name} model ({what}): {message}") from None


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

"""Exceptions raised by bavos. Every message says what was wrong and what to do about it."""


class BavosError(Exception):
    """Base class of every error bavos reports to a user."""

    exit_code = 1  # the CLI's exit code for it


class RandomWeightsWarning(UserWarning):
    """Models whose backbone has random weights (``backbone_weights="none"``, or a checkpoint trained on such a
    backbone): every output is made, but the masks mean nothing."""


class InputError(BavosError):
    """A video or frame folder that cannot be read."""


class WeightsError(BavosError):
    """Backbone weights that cannot be found or do not fit the model."""


class CheckpointError(BavosError):
    """A correlator checkpoint that cannot be loaded."""


class ConfigError(BavosError):
    """Options that do not make sense together."""


class UsageError(ConfigError):
    """An option value that cannot be honoured, found once its input was read (``recut --level 99``): exit code 2,
    as for any bad usage."""

    exit_code = 2


class ClipsFolderError(InputError, UsageError):
    """`bavos train`'s clips folder missing or not a folder: exit code 2, as for any bad usage."""

    exit_code = 2


class ResultPathError(InputError, UsageError):
    """A path given to `bavos recut` or `bavos view` that names no result folder (missing, a file, a folder of
    results): exit code 2, as for any bad usage."""

    exit_code = 2


class LimitError(UsageError):
    """More asked of the disk than a limit allows without saying so (``--max-export-files``): a usage error, found
    before writing."""


class OutputError(BavosError):
    """Outputs that cannot be written."""


class DestinationError(OutputError):
    """An output location that would replace or lie inside what is not bavos's (a usage error, found before the
    work)."""

    exit_code = 2


class EvalError(BavosError):
    """Predictions or ground truth that cannot be evaluated."""


class EvalUsageError(EvalError, UsageError):
    """An evaluation pointed at what is not there (a folder, a --davis root, a sequence named with --sequences) or
    asked for what it cannot do: exit code 2, as for any bad usage."""

    exit_code = 2


class TrainError(BavosError):
    """A training run that cannot go on (e.g. the loss became NaN)."""


class ResourceError(BavosError):
    """A run that would not fit this machine (memory), stopped before the work."""


_PLAIN = {
    "ENOSPC": "no space left on the device",
    "EDQUOT": "the disk quota is used up",
    "EFBIG": "the file is too large for this file system or the limit set on file sizes",
    "EACCES": "permission denied",
    "EPERM": "operation not permitted",
    "EROFS": "the file system is read-only",
    "ENOTDIR": "a file stands where a folder is expected",
    "EISDIR": "a folder stands where a file is expected",
    "EEXIST": "something is already there",
    "ENAMETOOLONG": "the name is too long for this file system",
    "ENOENT": "no such file or folder",
    "EIO": "an input/output error (a failing disk or a lost network drive)",
    "EMFILE": "too many open files (raise the limit: ulimit -n)",
    "ENOTEMPTY": "the folder is not empty",
    "EXDEV": "it lies on another file system",
}


def plain_os_error(e: OSError, path: object = None) -> str:
    """One line for an OSError: ``PATH: what happened, in plain words`` (the path from ``e`` unless given)."""
    import errno

    name = errno.errorcode.get(e.errno or 0, "")
    cause = _PLAIN.get(name) or (e.strerror or str(e)).rstrip(".").lower() or type(e).__name__
    where = path if path is not None else (e.filename or "")
    return f"{where}: {cause}" if where else cause


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a job scheduler's time limit), raised as Ctrl-C is so that the same clean-up runs; its
    reports say "terminated", and the exit code is 143."""


# what allocators and loaders say when memory or address space runs out (torch's CPU allocator, the dynamic loader)
OUT_OF_MEMORY = ("can't allocate memory", "failed to map segment", "out of memory")


def internal_error(e: BaseException) -> str:
    """What is said of an exception bavos did not foresee: memory that ran out, named as such; else (a bug) its kind
    and first line, and how to see more."""
    first = (str(e).splitlines() or [""])[0]
    if isinstance(e, MemoryError) or any(words in str(e).lower() for words in OUT_OF_MEMORY):
        said = f" ({type(e).__name__}: {first[:160]})" if first else f" ({type(e).__name__})"
        return (
            f"out of memory{said}: the machine's memory or a limit on it (ulimit -v, a cgroup) is too small for this "
            "run"
        )
    return f"internal error: {type(e).__name__}: {first} (run with BAVOS_DEBUG=1 for the traceback)"

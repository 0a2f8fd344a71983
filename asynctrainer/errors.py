"""The exceptions asynctrainer raises for bad input and failed work.

::

    AsyncTrainerError
    ├── SettingsError            a run config or CLI flag is invalid
    │   └── UnsupportedFeatureError   a valid ML-Agents key names a feature not built yet
    ├── EnvError                 an env could not be made or misbehaved
    │   ├── SpecError            data does not match a behavior's spec
    │   └── EnvStoppedError      the env ended the session on its side (the run stops cleanly)
    ├── UpdateError              a trainer update failed (behavior, step; cause in __cause__)
    ├── CheckpointError
    │   ├── CheckpointLoadError  a checkpoint is missing, corrupt or incomplete
    │   └── CheckpointSaveError  a checkpoint could not be committed
    ├── ExportError              a model could not be exported
    ├── DemonstrationError       a .demo file is unreadable or does not fit the behavior
    ├── RunDirectoryError        the run directory clashes with the flags given
    └── UsageError               an API was called in a state that does not allow it
"""

from __future__ import annotations

import asyncio

import anyio

__all__ = [
    "AsyncTrainerError",
    "CheckpointError",
    "CheckpointLoadError",
    "CheckpointSaveError",
    "DemonstrationError",
    "EnvError",
    "EnvStoppedError",
    "ExportError",
    "RunDirectoryError",
    "SettingsError",
    "SpecError",
    "UnsupportedFeatureError",
    "UpdateError",
    "UsageError",
    "error_leaves",
    "raise_single_error",
]


class AsyncTrainerError(Exception):
    """Root of every error asynctrainer raises on purpose."""

    #: Exit code the CLI uses: 2 for bad input, 1 for a failure during training.
    exit_code: int = 2


class SettingsError(AsyncTrainerError):
    """Raised when a run config value or key is invalid.

    :ivar key_path: dotted path of the offending key, e.g. ``behaviors.3DBall.hyperparameters.batch_size``.
    """

    def __init__(self, message: str, *, key_path: str | None = None) -> None:
        super().__init__(message)
        self.key_path = key_path


class UnsupportedFeatureError(SettingsError):
    """Raised when a config uses an ML-Agents feature asynctrainer does not build yet."""


class EnvError(AsyncTrainerError):
    """Raised when an env cannot be created, or returns something unusable."""


class SpecError(EnvError):
    """Raised when observations, actions or agent ids do not match a behavior's spec."""


class EnvStoppedError(EnvError):
    """Raised by an env whose other side ended the session (e.g. Stop pressed in the Unity Editor).

    The env loop ends its agents' open trajectories as interrupted, sends them, and returns: the
    run then stops as if asked to, with its final checkpoint and model.
    """


class UpdateError(AsyncTrainerError):
    """Raised when a trainer's update fails; the original error is ``__cause__``.

    :ivar behavior_name: the behavior whose update failed.
    :ivar step: the trainer step at which it failed.
    """

    exit_code = 1

    def __init__(self, behavior_name: str, step: int, cause: BaseException) -> None:
        super().__init__(
            f"The update of behavior '{behavior_name}' failed at step {step}: {type(cause).__name__}: {cause}"
        )
        self.behavior_name = behavior_name
        self.step = step


class CheckpointError(AsyncTrainerError):
    """Root of checkpoint failures."""


class CheckpointLoadError(CheckpointError):
    """Raised when a checkpoint to resume or initialise from is missing, corrupt or incomplete.

    :ivar path: the file or directory that was wrong.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class CheckpointSaveError(CheckpointError):
    """Raised when a checkpoint could not be committed; the previous one stays valid."""

    exit_code = 1


class ExportError(AsyncTrainerError):
    """Raised when a policy cannot be exported to SavedModel or ONNX."""

    exit_code = 1


class DemonstrationError(AsyncTrainerError):
    """Raised when a ``.demo`` file cannot be read, or its specs do not fit the behavior it is used for.

    :ivar path: the file (or directory) that was wrong.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class RunDirectoryError(AsyncTrainerError):
    """Raised when the run directory exists (or is missing) and the flags do not allow it."""


class UsageError(AsyncTrainerError):
    """Raised when an API is called in a state that does not allow it (a program's mistake, not bad input).

    E.g. reading a :class:`PolicySlot` before anything was published, or giving a trainer a second channel.
    """

    exit_code = 1


def error_leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The errors of a (nested) task-group failure, in order, without the groups and cancellations.

    A task cancelled because another failed is not an error. Works inside or outside an event loop.
    """
    try:
        cancelled: tuple[type[BaseException], ...] = (anyio.get_cancelled_exc_class(), asyncio.CancelledError)
    except anyio.NoEventLoopError:  # e.g. the CLI reporting a run's errors after its loop ended
        cancelled = (asyncio.CancelledError,)
    leaves: list[BaseException] = []

    def collect(g: BaseExceptionGroup[BaseException]) -> None:
        for e in g.exceptions:
            if isinstance(e, BaseExceptionGroup):
                collect(e)
            elif not isinstance(e, cancelled):
                leaves.append(e)

    collect(group)
    return leaves


def raise_single_error(group: BaseExceptionGroup[BaseException]) -> None:
    """Raise the only real error of a task group's failure, not the group; return if there are several.

    Cancellations in the group do not count (see :func:`error_leaves`).
    """
    leaves = error_leaves(group)
    if len(leaves) == 1:
        raise leaves[0]

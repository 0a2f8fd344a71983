"""Demonstrations: Unity's ``.demo`` files, read and written (names imported on first use)."""

from __future__ import annotations

from asynctrainer.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "DemoRecorder": "asynctrainer.demos.recorder",
    "DemoRecords": "asynctrainer.demos.reader",
    "DemoTransitions": "asynctrainer.demos.reader",
    "Demonstration": "asynctrainer.demos.reader",
    "DemonstrationWriter": "asynctrainer.demos.writer",
    "RecordingEnv": "asynctrainer.demos.recording_env",
    "load_demonstration": "asynctrainer.demos.reader",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

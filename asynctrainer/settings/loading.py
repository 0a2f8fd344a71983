"""Loading a run config: from a YAML file, or from a mapping already parsed."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import yaml

from asynctrainer.errors import SettingsError
from asynctrainer.settings.models import RunSettings, TrainerSettings
from asynctrainer.settings.notices import silenced

__all__ = ["load_run_settings", "run_settings_from_dict"]


def run_settings_from_dict(data: Mapping[str, Any], *, notices: bool = True) -> RunSettings:
    """Validates a run config already parsed from YAML (or built in Python).

    Deprecated keys and keys that have no effect yet are reported once each on the
    ``asynctrainer`` logger; ``notices=False`` skips that, for a config validated again whose
    first load reported them (e.g. ``to_yaml_dict()`` with command-line overrides).
    """
    if not isinstance(data, Mapping):
        raise SettingsError(f"The config must be a mapping with a `behaviors` key, not {type(data).__name__}.")
    if not notices:
        with silenced():
            return RunSettings.model_validate(dict(data))
    return RunSettings.model_validate(dict(data))


def load_run_settings(path: str | os.PathLike[str] | None = None) -> RunSettings:
    """Loads and validates a YAML run config.

    With no path, every behavior gets ML-Agents' defaults (``default_settings`` is set to
    ``TrainerSettings()``), as ``mlagents-learn`` does without a config file.
    """
    if path is None:
        return RunSettings(default_settings=TrainerSettings())
    name = os.fspath(path)
    if not os.path.exists(name):
        raise SettingsError(f"Config file '{name}' was not found.")
    if not os.path.isfile(name):
        raise SettingsError(f"Config file '{name}' is not a file.")
    try:
        with open(name, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as exc:
        raise SettingsError(f"Config file '{name}' could not be read: {exc.strerror}.") from None
    except UnicodeDecodeError:
        raise SettingsError(f"Config file '{name}' could not be read: it is not UTF-8 text.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where, problem = "", str(exc).replace("\n", " ")
        if isinstance(exc, yaml.MarkedYAMLError):
            problem = exc.problem or problem
            if exc.problem_mark is not None:
                mark = exc.problem_mark
                where = f" at line {mark.line + 1}, column {mark.column + 1}"
        raise SettingsError(f"Config file '{name}' is not valid YAML{where}: {problem}.") from None
    if not isinstance(data, Mapping):
        found = "empty" if data is None else f"a {type(data).__name__}"
        raise SettingsError(f"Config file '{name}' is {found}: the config must be a mapping with a `behaviors` key.")
    return run_settings_from_dict(data)

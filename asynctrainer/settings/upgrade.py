"""The upgrade of legacy ML-Agents configs to the current format, before validation.

Configs of older ML-Agents releases load unchanged: each legacy form is rewritten the way
ML-Agents' own config upgrade rewrites it, and each legacy key is reported once (a notice on the
``asynctrainer`` logger) naming the key and its current form.

- The format before ML-Agents 0.17: behaviors at the top level, a ``default`` section (now
  ``default_settings``), ``trainer`` (now ``trainer_type``), hyperparameters and network
  options flat in a behavior (now under ``hyperparameters:`` and ``network_settings:``), and
  ``use_recurrent``/``sequence_length``/``memory_size`` (now ``network_settings.memory``).
- Per behavior: ``output_path``, ``framework`` and ``threaded``, which asynctrainer ignores.
- The 0.17-era ``parameter_randomization`` (``sampler-type``, flat sampler arguments,
  ``resampling-interval``) and ``curriculum`` (per behavior: ``measure``, ``thresholds``,
  ``parameters``) sections, now ``environment_parameters``.

Any other key stays as it is, for validation to accept or refuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asynctrainer.settings.notices import notice
from asynctrainer.settings.translate import invalid, show

__all__ = ["upgrade_run", "upgrade_trainer"]

_COMMON_HYPERPARAMETERS = frozenset({"batch_size", "buffer_size", "learning_rate", "learning_rate_schedule"})
#: Hyperparameters a behavior held flat before ML-Agents 0.17, by trainer.
_FLAT_HYPERPARAMETERS: dict[str, frozenset[str]] = {
    "ppo": _COMMON_HYPERPARAMETERS | {"beta", "epsilon", "lambd", "num_epoch"},
    "poca": _COMMON_HYPERPARAMETERS | {"beta", "epsilon", "lambd", "num_epoch"},
    "sac": _COMMON_HYPERPARAMETERS
    | {"buffer_init_steps", "tau", "steps_per_update", "save_replay_buffer", "init_entcoef"}
    | {"reward_signal_steps_per_update"},
}
_FLAT_NETWORK = frozenset({"normalize", "hidden_units", "num_layers", "vis_encode_type"})
_FLAT_MEMORY = ("use_recurrent", "sequence_length", "memory_size")
#: Keys that mark a top-level section as a behavior of the format before 0.17.
_FLAT_MARKERS = (
    frozenset({"trainer", "use_recurrent"}) | _FLAT_NETWORK | frozenset().union(*_FLAT_HYPERPARAMETERS.values())
)

_IGNORED_TRAINER_KEYS: dict[str, str] = {
    "output_path": "`output_path` (written by older ML-Agents releases) is ignored: a behavior's files go to "
    "checkpoint_settings.results_dir/<run_id>/<behavior>; remove it.",
    "framework": "`framework` is deprecated (ML-Agents dropped it too) and ignored: asynctrainer always uses "
    "TensorFlow; remove it.",
    "threaded": "`threaded` is deprecated and has no effect: asynctrainer always runs updates off the event "
    "loop; `strict_on_policy: true` is what `threaded: false` did (the env waits for each update).",
}
_LEGACY_RUN_KEYS = ("parameter_randomization", "curriculum")


def upgrade_trainer(data: Mapping[str, Any]) -> dict[str, Any]:
    """One behavior's settings (or ``default_settings``) in the current format."""
    out = dict(data)
    for key, message in _IGNORED_TRAINER_KEYS.items():
        if key in out:
            del out[key]
            notice(key, message)
    if "trainer" in out:
        _upgrade_flat_trainer(out)
    return out


def _upgrade_flat_trainer(out: dict[str, Any]) -> None:
    if "trainer_type" in out:
        raise invalid(
            "trainer (ML-Agents before 0.17) and trainer_type are both given: keep trainer_type only.", where="trainer"
        )
    trainer_type = out.pop("trainer")
    out["trainer_type"] = trainer_type
    notice("trainer", "`trainer` (ML-Agents before 0.17) is now `trainer_type`; upgraded.")
    own = _FLAT_HYPERPARAMETERS.get(trainer_type) if isinstance(trainer_type, str) else None
    if own is None:  # an unknown trainer: its keys stay, and trainer_type is refused
        return
    other = frozenset().union(*_FLAT_HYPERPARAMETERS.values()) - own
    hyperparameters = dict(out.get("hyperparameters") or {})
    network = dict(out.get("network_settings") or {})
    for key in list(out):
        if key in own:
            hyperparameters[key] = out.pop(key)
            notice(
                f"hyperparameters.{key}",
                f"`{key}` at a behavior's top level (ML-Agents before 0.17) is now `hyperparameters.{key}`; upgraded.",
            )
        elif key in other:
            del out[key]
            notice(
                f"{trainer_type}.ignored.{key}",
                f"`{key}` is not a hyperparameter of trainer {trainer_type} and is ignored, as ML-Agents' config "
                "upgrade drops it.",
            )
        elif key in _FLAT_NETWORK:
            network[key] = out.pop(key)
            notice(
                f"network_settings.{key}",
                f"`{key}` at a behavior's top level (ML-Agents before 0.17) is now `network_settings.{key}`; upgraded.",
            )
    memory = {key: out.pop(key) for key in _FLAT_MEMORY if key in out}
    if memory:
        notice(
            "use_recurrent",
            "`use_recurrent`, `sequence_length` and `memory_size` (ML-Agents before 0.17) are now "
            "`network_settings.memory: {sequence_length, memory_size}`, set when use_recurrent is true; upgraded.",
        )
        if memory.get("use_recurrent"):
            network["memory"] = {k: v for k, v in memory.items() if k != "use_recurrent"}
    if hyperparameters:
        out["hyperparameters"] = hyperparameters
    if network:
        out["network_settings"] = network


def upgrade_run(data: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """The whole config in the current format; ``fields`` are the current top-level keys."""
    out = dict(data)
    if "behaviors" not in out:
        _upgrade_flat_run(out, fields)
    if any(key in out for key in _LEGACY_RUN_KEYS):
        _upgrade_environment_parameters(out)
    return out


def _upgrade_flat_run(out: dict[str, Any], fields: Mapping[str, Any]) -> None:
    sections = {
        key: value
        for key, value in out.items()
        if key not in fields and key not in _LEGACY_RUN_KEYS and (value is None or isinstance(value, Mapping))
    }
    flat = {k: v for k, v in sections.items() if k == "default" or (v is not None and _FLAT_MARKERS & set(v))}
    if not flat:
        return
    default = sections.pop("default", None) or {}
    behaviors: dict[str, Any] = {}
    for name, own in sections.items():
        if "trainer" not in (own or {}) and "trainer" not in default:
            raise invalid(
                f"The behavior '{name}' (ML-Agents' format before 0.17) gives no trainer, nor does a default "
                "section: add trainer: ppo or trainer: sac.",
                where=str(name),
            )
        behaviors[str(name)] = own
        del out[name]
    out["behaviors"] = behaviors
    if behaviors:
        notice(
            "behaviors",
            f"This config has ML-Agents' format before 0.17, with behaviors at the top level "
            f"({', '.join(behaviors)}): they are now under `behaviors:`; upgraded.",
        )
    if "default" in out:
        if "default_settings" in out:
            raise invalid("default (ML-Agents before 0.17) and default_settings are both given: keep one.")
        out["default_settings"] = out.pop("default")
        notice("default", "`default` (ML-Agents before 0.17) is now `default_settings`; upgraded.")


def _upgrade_environment_parameters(out: dict[str, Any]) -> None:
    if out.get("environment_parameters") is not None:
        given = " and ".join(k for k in _LEGACY_RUN_KEYS if k in out)
        raise invalid(
            f"{given} (ML-Agents 0.17) and environment_parameters are both given: keep environment_parameters, "
            "which replaced them."
        )
    parameters: dict[str, Any] = {}
    randomization = out.pop("parameter_randomization", None)
    if randomization is not None:
        parameters.update(_upgrade_samplers(randomization))
        notice(
            "parameter_randomization",
            "`parameter_randomization` (ML-Agents 0.17) is now `environment_parameters`, each parameter as "
            "{sampler_type, sampler_parameters}; upgraded.",
        )
    curriculum = out.pop("curriculum", None)
    if curriculum is not None:
        for name, lessons in _upgrade_curriculum(curriculum).items():
            if name in parameters:
                notice(
                    f"curriculum.{name}",
                    f"The environment parameter '{name}' has a sampler and a curriculum: the curriculum is "
                    "ignored, as ML-Agents' config upgrade does.",
                )
            else:
                parameters[name] = lessons
        notice(
            "curriculum",
            "`curriculum` (ML-Agents 0.17) is now lessons under `environment_parameters.<parameter>.curriculum`; "
            "upgraded.",
        )
    out["environment_parameters"] = parameters


def _upgrade_samplers(randomization: Any) -> dict[str, Any]:
    if not isinstance(randomization, Mapping):
        raise invalid(f"{show(randomization)} is not valid: expected a mapping of samplers by parameter name.")
    samplers: dict[str, Any] = {}
    for name, sampler in randomization.items():
        if name == "resampling-interval":
            notice(
                "resampling-interval",
                "`parameter_randomization.resampling-interval` (ML-Agents 0.17) is no longer needed and is ignored.",
            )
            continue
        if not isinstance(sampler, Mapping):
            samplers[name] = sampler  # a constant, or a value validation refuses
            continue
        rest = dict(sampler)
        if "sampler-type" in rest:
            rest["sampler_type"] = rest.pop("sampler-type")
        sampler_type = rest.pop("sampler_type", None)
        if sampler_type == "multirange_uniform":  # the 0.17 name of multirangeuniform
            sampler_type = "multirangeuniform"
        arguments = dict(rest.pop("sampler_parameters", None) or {})
        arguments.update(rest)
        samplers[name] = {"sampler_type": sampler_type, "sampler_parameters": arguments}
    return samplers


def _upgrade_curriculum(curriculum: Any) -> dict[str, Any]:
    """ML-Agents 0.17's curricula by behavior → lessons by parameter (as ML-Agents' upgrade writes them)."""
    if not isinstance(curriculum, Mapping):
        raise invalid(f"{show(curriculum)} is not valid: expected a mapping of curricula by behavior name.")
    parameters: dict[str, Any] = {}
    for behavior, spec in curriculum.items():
        thresholds = spec.get("thresholds") if isinstance(spec, Mapping) else None
        values = spec.get("parameters") if isinstance(spec, Mapping) else None
        if not isinstance(thresholds, list) or not isinstance(values, Mapping):
            raise invalid(
                f"{show(spec)} is not valid: a curriculum gives measure, thresholds (a list) and parameters "
                "(lists of lesson values by parameter name).",
                where=f"curriculum.{behavior}",
            )
        criteria = {
            "measure": spec.get("measure", "reward"),
            "behavior": behavior,
            "signal_smoothing": spec.get("signal_smoothing", False),
            "min_lesson_length": spec.get("min_lesson_length", 1),
        }
        for name, lesson_values in values.items():
            if not isinstance(lesson_values, list) or len(lesson_values) != len(thresholds) + 1:
                raise invalid(
                    f"{show(lesson_values)} is not valid: expected a list of {len(thresholds) + 1} lesson values "
                    "(one more than thresholds).",
                    where=f"curriculum.{behavior}.parameters.{name}",
                )
            lessons: list[dict[str, Any]] = [
                {f"Lesson{i}": {"completion_criteria": {**criteria, "threshold": t}, "value": lesson_values[i]}}
                for i, t in enumerate(thresholds)
            ]
            lessons.append({f"Lesson{len(thresholds)}": {"value": lesson_values[-1]}})
            parameters[name] = {"curriculum": lessons}
    return parameters

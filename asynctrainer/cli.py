"""``asynctrainer-learn``: ML-Agents' ``mlagents-learn`` on the asyncio runtime.

Bad input is reported as one paragraph on stderr, with exit code 2, before anything is
written or deleted: the config, the env, ``init_path``, demonstrations and ``--initialize-from``, and whether
the results directory is writable are all checked first. A failure during training exits
with 1; several errors at once print one paragraph each (the exit code is the highest).
A run stopped by SIGINT or SIGTERM still saves its final checkpoint, then exits with
130 or 143. ``--debug`` adds the traceback.

``--force`` deletes only a run directory this tool made: one holding the marker file
:data:`RUN_MARKER`, written when a training run starts, directly under the results directory
and not a symbolic link. Any other directory at the run's path is refused with a
:class:`~asynctrainer.errors.RunDirectoryError`, and its files are left alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asynctrainer.errors import AsyncTrainerError, RunDirectoryError, SettingsError, error_leaves

__all__ = ["RUN_MARKER", "main", "parse_args"]

logger = logging.getLogger("asynctrainer")

#: ``--env pettingzoo:<id or module>``: a PettingZoo env.
PETTINGZOO_PREFIX = "pettingzoo:"

#: Written into a run directory when a training run starts: ``--force`` deletes only directories holding it.
RUN_MARKER = ".asynctrainer-run"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="asynctrainer-learn",
        description="Train agents with ML-Agents' run config on the asyncio runtime.",
    )
    p.add_argument("trainer_config_path", nargs="?", default=None, help="ML-Agents YAML run config.")
    p.add_argument(
        "--env",
        dest="env_path",
        default=None,
        help="A Unity build (a path that exists), a gymnasium id (CartPole-v1), package.module:factory or "
        "pettingzoo:<id or module> (e.g. pettingzoo:classic/tictactoe-v3); none: wait for the Unity "
        "Editor's Play button.",
    )
    p.add_argument("--run-id", default=None, help="Name of this run; its files go to <results-dir>/<run-id>/.")
    p.add_argument("--results-dir", default=None, help="Where run directories go (default: results).")
    p.add_argument("--num-envs", type=int, default=None, help="Copies of the env (Unity: players) stepped together.")
    p.add_argument("--seed", type=int, default=None, help="Random seed; -1 picks one.")
    p.add_argument("--max-steps", type=float, default=None, help="Override max_steps of every behavior.")
    p.add_argument("--executor", choices=["local", "ray"], default=None, help="Where env loops run (ray: Ray actors).")
    p.add_argument("--num-workers", type=int, default=None, help="Ray env workers (with --executor ray).")
    p.add_argument("--ray-address", default=None, help="Ray cluster to join (default: start a local Ray).")
    unity = p.add_argument_group("Unity", "Unity Editor and player options (as mlagents-learn's)")
    unity.add_argument(
        "--base-port", type=int, default=None, help="Player i listens on base-port + i (5005); also the Editor's port."
    )
    unity.add_argument("--num-areas", type=int, default=None, help="Training areas per Unity instance (1).")
    unity.add_argument("--timeout-wait", type=int, default=None, help="Seconds Unity may take to answer (60).")
    unity.add_argument("--max-lifetime-restarts", type=int, default=None, help="Player relaunches in a run (10).")
    unity.add_argument("--restarts-rate-limit-n", type=int, default=None, help="Relaunches per period (1).")
    unity.add_argument("--restarts-rate-limit-period-s", type=int, default=None, help="Relaunch period (60 s).")
    for flag, kind, text in (
        ("--width", int, "Window width (84)."),
        ("--height", int, "Window height (84)."),
        ("--quality-level", int, "Quality level (5)."),
        ("--time-scale", float, "Time scale (20)."),
        ("--target-frame-rate", int, "Target frame rate (-1: unlimited)."),
        ("--capture-frame-rate", int, "Capture frame rate (60)."),
    ):
        unity.add_argument(flag, type=kind, default=None, help=text)
    unity.add_argument("--no-graphics", action="store_true", default=None, help="Players run without graphics.")
    unity.add_argument("--no-graphics-monitor", action="store_true", default=None, help="Only player 0 shows graphics.")
    unity.add_argument(
        "--env-args", nargs=argparse.REMAINDER, default=None, help="Arguments for the player (the rest of the line)."
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--force", action="store_true", help="Overwrite an existing run directory (only one this tool made)."
    )
    mode.add_argument("--resume", action="store_true", help="Resume the run from its last checkpoint.")
    mode.add_argument(
        "--initialize-from", default=None, metavar="RUN_ID", help="Start from another run's weights, at step 0."
    )
    p.add_argument("--inference", action="store_true", help="Run the trained policy without training.")
    p.add_argument("--deterministic", action="store_true", help="Act with the distribution's mode.")
    p.add_argument(
        "--record-demo",
        default=None,
        metavar="PATH",
        help="Record the policy playing to Unity's .demo format: PATH.demo, or a directory (one file per behavior).",
    )
    p.add_argument("--debug", action="store_true", help="Show tracebacks and debug logs.")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return _parser().parse_args(argv)


def _override(args: argparse.Namespace) -> Any:
    """Load the config and apply command-line flags over it (flags win, as in ML-Agents)."""
    from asynctrainer.settings import load_run_settings, run_settings_from_dict

    settings = load_run_settings(args.trainer_config_path)
    data = settings.to_yaml_dict()
    env = data.setdefault("env_settings", {})
    ckpt = data.setdefault("checkpoint_settings", {})
    for key, value in (
        ("env_path", args.env_path),
        ("num_envs", args.num_envs),
        ("seed", args.seed),
        ("executor", args.executor),
        ("num_workers", args.num_workers),
        ("ray_address", args.ray_address),
        ("base_port", args.base_port),
        ("num_areas", args.num_areas),
        ("timeout_wait", args.timeout_wait),
        ("max_lifetime_restarts", args.max_lifetime_restarts),
        ("restarts_rate_limit_n", args.restarts_rate_limit_n),
        ("restarts_rate_limit_period_s", args.restarts_rate_limit_period_s),
        ("env_args", args.env_args),
    ):
        if value is not None:
            env[key] = value
    engine = data.setdefault("engine_settings", {})
    for key in _ENGINE_FLAGS:
        value = getattr(args, key)
        if value is not None:
            engine[key] = value
    for key, value in (
        ("run_id", args.run_id),
        ("results_dir", args.results_dir),
        ("initialize_from", args.initialize_from),
    ):
        if value is not None:
            ckpt[key] = value
    for key in ("force", "resume", "inference"):
        if getattr(args, key):
            ckpt[key] = True
    if args.max_steps is not None:
        targets = list((data.get("behaviors") or {}).values())
        if data.get("default_settings"):
            targets.append(data["default_settings"])
        for trainer in targets:
            trainer["max_steps"] = args.max_steps
    settings = run_settings_from_dict(data, notices=False)  # the load above reported deprecated keys
    if settings.env_settings.executor == "ray":
        from asynctrainer.scale import require_ray

        require_ray()  # before anything is written: a SettingsError naming the ray extra
    return settings


_ENGINE_FLAGS = (
    "width",
    "height",
    "quality_level",
    "time_scale",
    "target_frame_rate",
    "capture_frame_rate",
    "no_graphics",
    "no_graphics_monitor",
)


def _check_run_dir(run_dir: Path, ckpt: Any) -> None:
    if ckpt.force and ckpt.inference:
        raise SettingsError(
            "--force and --inference do not go together: --force would delete the run whose model --inference "
            "plays. Drop --force to play the run, or --inference to train it again."
        )
    if (run_dir.exists() or run_dir.is_symlink()) and not (ckpt.force or ckpt.resume or ckpt.inference):
        raise RunDirectoryError(
            f"Previous data from this run ID was found in '{run_dir}'. Either specify a new run ID, "
            "use --resume to resume this run, or use the --force parameter to overwrite existing data."
        )
    if not run_dir.exists() and (ckpt.resume or ckpt.inference):
        flag = "--resume" if ckpt.resume else "--inference"
        raise RunDirectoryError(
            f"Previous data from this run ID was not found in '{run_dir}'. Train a new run by removing the {flag} flag."
        )


def _check_force_target(run_dir: Path, results_dir: Path) -> None:
    """:raises RunDirectoryError: unless ``run_dir`` is a run directory this tool made (see the module's docstring)."""
    if run_dir.is_symlink():
        raise RunDirectoryError(
            f"'{run_dir}' is a symbolic link; --force deletes only run directories asynctrainer-learn made. "
            "Remove the link yourself, or choose another --run-id."
        )
    if not run_dir.exists():
        return
    if run_dir.resolve().parent != results_dir.resolve():
        raise RunDirectoryError(
            f"'{run_dir}' is not a directory directly inside the results directory '{results_dir}', so --force "
            "will not delete it. Give --run-id a plain name."
        )
    marker = run_dir / RUN_MARKER
    if not (run_dir.is_dir() and marker.is_file() and not marker.is_symlink()):
        raise RunDirectoryError(
            f"'{run_dir}' was not made by asynctrainer-learn (it has no {RUN_MARKER} file), so --force will not "
            "delete it. Move or delete it yourself, or choose another --run-id."
        )


def _check_writable(run_dir: Path, results_dir: Path) -> None:
    """:raises RunDirectoryError: when the run directory (or where it will be made) is not writable."""
    target = run_dir if run_dir.is_dir() else results_dir
    while not target.exists() and target != target.parent:
        target = target.parent
    if not (target.is_dir() and os.access(target, os.W_OK | os.X_OK)):
        raise RunDirectoryError(
            f"Cannot write the run directory '{run_dir}': '{target}' is not a writable directory. "
            "Choose a writable place with --results-dir."
        )


def _check_init_path(name: str, trainer_settings: Any, run_dir: Path, force: bool) -> None:
    """:raises SettingsError: when a behavior's ``init_path`` holds no checkpoint, or --force would delete it."""
    from asynctrainer.checkpoints.format import MANIFEST, list_checkpoints

    value = getattr(trainer_settings, "init_path", None)
    if not value:
        return
    init = Path(value)
    key = f"behaviors.{name}.init_path"
    if force and init.resolve().is_relative_to(run_dir.resolve()):
        raise SettingsError(
            f"{key} is '{init}', inside the run directory '{run_dir}' that --force would delete. "
            "Copy the checkpoint elsewhere first, or use --resume to continue that run.",
            key_path=key,
        )
    if not ((init / MANIFEST).is_file() or list_checkpoints(init / "checkpoints", name)):
        raise SettingsError(
            f"{key} is '{init}', which holds no checkpoint: give a checkpoint directory (with {MANIFEST}) "
            f"or a behavior directory holding checkpoints/ (e.g. results/<run-id>/{name}).",
            key_path=key,
        )


def _check_demo_paths(name: str, trainer_settings: Any, run_dir: Path, force: bool) -> None:
    """:raises DemonstrationError: when a behavior's demonstration cannot be read, or --force would delete it."""
    from asynctrainer.demos.reader import load_demonstration
    from asynctrainer.errors import DemonstrationError

    bc = trainer_settings.behavioral_cloning
    gail = trainer_settings.reward_signals.get("gail")
    for key, value in [
        ("behavioral_cloning.demo_path", bc.demo_path if bc is not None else None),
        ("reward_signals.gail.demo_path", gail.demo_path if gail is not None else None),
    ]:
        if not value:
            continue
        where = f"behaviors.{name}.{key}"
        if force and Path(value).resolve().is_relative_to(run_dir.resolve()):
            raise DemonstrationError(
                f"{where} is '{value}', inside the run directory '{run_dir}' that --force would delete. "
                "Copy the demonstration elsewhere first.",
                path=value,
            )
        try:
            load_demonstration(value)
        except DemonstrationError as err:
            raise DemonstrationError(f"{where}: {err}", path=err.path) from None


def _recording(env: Any, names: list[str], target: Path) -> Any:
    """Wrap the run's env for ``--record-demo``: one ``.demo`` file per behavior, none existing yet.

    :raises SettingsError: for a Unity game (record there with Unity's Demonstration Recorder), a
        single-behavior path not ending in ``.demo``, or a file that exists already.
    """
    from asynctrainer.demos.reader import DEMO_SUFFIX
    from asynctrainer.demos.recording_env import RecordingEnv

    if isinstance(env, list):
        raise SettingsError(
            "--record-demo records one Python env (--num-envs 1); in a Unity game add Unity's Demonstration "
            "Recorder component to the agent instead."
        )
    keys = list(env.behavior_specs)
    if len(keys) == 1 and target.suffix != DEMO_SUFFIX:
        raise SettingsError(f"--record-demo is '{target}': for one behavior give a file name ending in {DEMO_SUFFIX}.")
    named = dict(zip(keys, names, strict=True))
    if len(set(names)) < len(names):
        raise SettingsError(
            f"--record-demo writes one file per behavior name, and this env's behaviors {keys} share names "
            f"(teams of one name train by self-play): record with a config without self_play."
        )
    paths = {key: target if len(keys) == 1 else target / f"{name}{DEMO_SUFFIX}" for key, name in named.items()}
    for path in paths.values():
        if path.exists():
            raise SettingsError(f"--record-demo would overwrite '{path}', which exists: give a new path.")
    return RecordingEnv(env, paths, named)


def _check_initialize_from(ckpt: Any, run_dir: Path) -> None:
    if ckpt.initialize_from is None:
        return
    source = Path(ckpt.results_dir) / ckpt.initialize_from
    if not source.is_dir():
        raise RunDirectoryError(f"Could not initialize from '{source}': no such run directory.")
    if ckpt.force and source.resolve() == run_dir.resolve():
        raise RunDirectoryError(
            f"Cannot initialize from '{source}' with --force: that is this run's directory, which --force would delete."
        )


def _start_run_dir(run_dir: Path, *, delete_first: bool) -> None:
    """Make the run directory (after deleting it, for --force) and mark it as this tool's.

    :raises RunDirectoryError: the directory could not be deleted or made.
    """
    from asynctrainer.files import atomic_write_text

    try:
        if delete_first and run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        marker = run_dir / RUN_MARKER
        if not marker.is_file():
            atomic_write_text(marker, "Written by asynctrainer-learn: --force may delete this run directory.\n")
    except OSError as exc:
        action = "replace" if delete_first else "make"
        raise RunDirectoryError(f"Could not {action} the run directory '{run_dir}': {exc}") from exc


def _make_env(settings: Any, run_dir: Path, args: argparse.Namespace) -> tuple[Any, list[str], str | None, int]:
    """The run's env source, the behaviors it is known to train, the env id naming them, and the seed.

    No ``--env``: the Unity Editor. A path that exists: a Unity build, ``--num-envs`` players.
    ``pettingzoo:<id or module>``: that PettingZoo env. Otherwise a gymnasium id or
    ``package.module:factory``. Python envs are made now, so their specs are checked.
    Unity's behaviors are known once it connects: the configured ones are checked here.
    """
    from asynctrainer.envs.unity.sources import is_unity_build, run_seed, unity_env_factories
    from asynctrainer.settings.naming import split_behavior_id

    es = settings.env_settings
    seed = run_seed(es.seed)
    if es.env_path is None or is_unity_build(es.env_path):
        factories = unity_env_factories(settings, run_dir=run_dir, seed=seed, editor_port=args.base_port)
        return factories, list(settings.behaviors), None, seed
    env_id: str | None = es.env_path
    if es.env_path.startswith(PETTINGZOO_PREFIX):
        env = _pettingzoo_envs(settings, seed)
        specs = (env[0] if isinstance(env, list) else env).behavior_specs
        env_id = None  # PettingZoo's agent groups name the behaviors, not the env id
    else:
        from asynctrainer.envs.gymnasium_env import load_env

        env = load_env(es.env_path, num_envs=es.num_envs, seed=seed)
        specs = env.behavior_specs
    names = [
        settings.resolve_behavior_name(name, env_id) if len(specs) == 1 else name
        for name in (split_behavior_id(key)[0] for key in specs)
    ]
    for name in names:
        settings.trainer_settings_for(name)  # a behavior with no settings: refused before anything is written
    return env, names, env_id, seed


def _pettingzoo_envs(settings: Any, seed: int) -> Any:
    """``--env pettingzoo:<id or module>``: ``--num-envs`` copies (seeds ``seed``, ``seed + 1``, …).

    An agent group trains by self-play (each agent a team of its own) when its behavior's
    settings have a ``self_play`` section.
    """
    from asynctrainer.envs.pettingzoo_env import load_pettingzoo

    es = settings.env_settings

    def self_play(group: str) -> bool:
        name = settings.resolve_behavior_name(group, None)
        trainer = settings.behaviors.get(name, settings.default_settings)
        return trainer is not None and trainer.self_play is not None

    envs = [load_pettingzoo(es.env_path, seed=seed + i, self_play=self_play) for i in range(es.num_envs)]
    return envs[0] if len(envs) == 1 else envs


async def _train(
    settings: Any, env: Any, run_dir: Path, env_id: str | None, seed: int, deterministic: bool = False
) -> tuple[Any, int | None]:
    """Run the training; returns its result (None when a second signal cut it short) and the first signal."""
    import anyio

    from asynctrainer.app import Runner
    from asynctrainer.errors import raise_single_error
    from asynctrainer.runtime.stats import ConsoleWriter, TensorboardWriter

    ckpt = settings.checkpoint_settings
    writers: list[Any] = [ConsoleWriter()]
    if not ckpt.inference:
        writers.append(TensorboardWriter(run_dir, clear_past_data=not ckpt.resume))
    runner = Runner(
        settings,
        env,
        results_dir=ckpt.results_dir,
        run_id=ckpt.run_id,
        env_id=env_id,
        seed=seed,
        training=not ckpt.inference,
        stats_writers=writers,
        resume=ckpt.resume,
        initialize_from=None if ckpt.initialize_from is None else Path(ckpt.results_dir) / ckpt.initialize_from,
        deterministic=deterministic,
    )

    received: list[int] = []

    async def on_signal(scope: anyio.CancelScope) -> None:
        # First signal: a clean stop (final checkpoint and model). A second one: cancel now;
        # the final save still runs shielded, within its time limit.
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                received.append(int(signum))
                if len(received) == 1:
                    logger.info(
                        "Learning was interrupted (%s). Please wait while the model is saved.",
                        signal.Signals(signum).name,
                    )
                    runner.stop()
                else:
                    logger.info(
                        "A second signal (%s): stopping now; the final save still runs.", signal.Signals(signum).name
                    )
                    scope.cancel()
                    return

    result = None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(on_signal, tg.cancel_scope)
            if sys.stdout.isatty():
                tg.start_soon(_progress, runner)
            result = await runner.run()
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the task group wraps run()'s error: report that error
        raise_single_error(group)
        raise
    return result, (received[0] if received else None)


async def _progress(runner: Any) -> None:
    """A progress bar per behavior, in a terminal only (summary lines still print above it)."""
    import anyio
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
    ) as progress:
        bars: dict[str, Any] = {}
        while True:
            for name, trainer in list(runner.trainers.items()):
                if name not in bars:
                    bars[name] = progress.add_task(name, total=trainer.get_max_steps)
                progress.update(bars[name], completed=min(trainer.step, trainer.get_max_steps))
            await anyio.sleep(0.25)


def _report(exc: BaseException, debug: bool) -> int:
    """Print ``exc`` (each error of a group as its own paragraph) on stderr; return the exit code."""
    errors = error_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    if not errors:  # a group of cancellations only
        errors = [exc]
    codes = [_print_error(e, debug) for e in errors]
    return max(codes)


def _print_error(exc: BaseException, debug: bool) -> int:
    code = exc.exit_code if isinstance(exc, AsyncTrainerError) else 1
    message = str(exc) if isinstance(exc, AsyncTrainerError) else f"{type(exc).__name__}: {exc}"
    if isinstance(exc, AsyncTrainerError) and exc.__cause__ is not None and code == 1 and not debug:
        message += " (run with --debug for the traceback)"
    # Paths stay whole (not broken at their hyphens or length) so they can be copied.
    text = textwrap.fill(
        f"asynctrainer-learn: error: {message}", width=100, break_long_words=False, break_on_hyphens=False
    )
    print(text, file=sys.stderr)
    if debug:
        import traceback

        traceback.print_exception(exc)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``asynctrainer-learn``; returns the exit code."""
    args = parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO
    if sys.stdout.isatty():
        from rich.logging import RichHandler

        # Log through rich so summary lines print above the progress bar, not through it.
        logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(show_path=False, show_time=False)])
    else:
        logging.basicConfig(level=level, format="%(message)s", stream=sys.stdout)
    made: Path | None = None  # the run directory this invocation made, while nothing of a run is in it
    try:
        import anyio

        from asynctrainer.runtime.scheduling import learner_priority, tf_threads

        settings = _override(args)
        ckpt = settings.checkpoint_settings
        # Everything that can be checked is checked before anything is deleted or written.
        results_dir = Path(ckpt.results_dir)
        run_dir = results_dir / ckpt.run_id
        _check_run_dir(run_dir, ckpt)
        if ckpt.force:
            _check_force_target(run_dir, results_dir)
        _check_initialize_from(ckpt, run_dir)
        if not ckpt.inference:
            _check_writable(run_dir, results_dir)
        learner_priority()
        tf_threads()
        env, behavior_names, env_id, seed = _make_env(settings, run_dir, args)
        for name in dict.fromkeys(behavior_names):  # the teams of one name: one trainer
            if not (ckpt.resume or ckpt.inference or ckpt.initialize_from):  # init_path is not used then
                _check_init_path(name, settings.trainer_settings_for(name), run_dir, ckpt.force)
            if not ckpt.inference:
                _check_demo_paths(name, settings.trainer_settings_for(name), run_dir, ckpt.force)
        if args.record_demo is not None:
            env = _recording(env, behavior_names, Path(args.record_demo))
        if not ckpt.inference:
            made = run_dir if ckpt.force or not run_dir.exists() else None
            _start_run_dir(run_dir, delete_first=ckpt.force)
        result, signum = anyio.run(_train, settings, env, run_dir, env_id, seed, args.deterministic)
    except KeyboardInterrupt:  # before the run could install its signal handling
        return 128 + signal.SIGINT
    except Exception as exc:  # our errors, groups of them, anything unexpected: paragraphs, not tracebacks
        code = _report(exc, args.debug)
        if code == 2 and made is not None and not (made / "configuration.yaml").exists():
            # Input rejected during set-up (e.g. a checkpoint that does not fit): the directory
            # this invocation made holds nothing of a run yet, so it goes.
            shutil.rmtree(made, ignore_errors=True)
        return code
    if result is not None:
        for name, steps in result.steps.items():
            logger.info(
                "%s: trained %d steps, %d episodes, %d updates.",
                name,
                steps,
                result.episodes[name],
                result.updates[name],
            )
    if signum is not None:  # stopped by a signal: the final save ran, but the run did not finish
        return 128 + signum
    return 0


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()

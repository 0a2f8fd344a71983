"""Gymnasium envs as an :class:`AsyncEnv`: N copies through gymnasium's vector API.

A registered env with a vectorised implementation of its own (``vector_entry_point``:
CartPole, Pendulum, ... step all copies in one numpy call) runs as that, unless environment
parameters must reach each episode's reset; any other runs as N copies in a ``SyncVectorEnv``.
Steps run in a worker thread, or on the loop while they measure fast (:mod:`.stepping`).

Both autoreset modes keep every transition inside one episode. ``SAME_STEP`` (the copies):
an episode's final observation arrives as a terminal step and the next episode's first
observation as a decision step of the same step. ``NEXT_STEP`` (most vectorised envs): an
ended copy's terminal step comes alone; the next step resets it, ignoring its action, and its
first observation comes then as a decision step with no reward. ``terminated`` becomes a
terminal step, ``truncated`` an interrupted one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import numpy as np
import numpy.typing as npt

from asynctrainer.envs.spaces import action_spec_of, env_actions, observation_spec_of, observations_of
from asynctrainer.envs.spec import ActionBatch, BehaviorSpec, DecisionSteps, StepBatch, TerminalSteps
from asynctrainer.envs.stepping import DEFAULT_INLINE_BELOW, StepPlacement
from asynctrainer.errors import AsyncTrainerError, EnvError, SpecError
from asynctrainer.runtime.curriculum import ParameterSampler
from asynctrainer.settings.naming import behavior_name_for

__all__ = ["GymnasiumEnv", "behavior_name_for", "call_env_factory", "gymnasium_copies", "load_env"]

F32 = npt.NDArray[np.float32]


def call_env_factory(factory: Callable[[], Any], label: str) -> Any:
    """Call a user's env factory; what it raises becomes an :class:`EnvError` naming ``label``.

    :raises EnvError: the factory raised (the original error is ``__cause__``).
    """
    try:
        return factory()
    except AsyncTrainerError:
        raise
    except Exception as exc:
        raise EnvError(f"The env factory {label} raised {type(exc).__name__}: {exc}") from exc


class _ParameterOptions:
    """An env copy whose every ``reset`` (autoresets too) gets its adapter's environment parameters as options.

    A plain proxy rather than a ``gymnasium.Wrapper``, which insists on ``gymnasium.Env`` subclasses;
    the vector env reaches everything else of the copy through it unchanged.
    """

    def __init__(self, env: Any, source: GymnasiumEnv) -> None:
        self.env = env
        self._source = source
        self.step = env.step

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        parameters = self._source.parameter_options()
        if parameters:
            options = {**parameters, **(options or {})}
        return self.env.reset(seed=seed, options=options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)


class GymnasiumEnv:
    """``num_envs`` copies of a gymnasium env, one behavior, agent ids ``0 … num_envs-1``.

    :param id_or_factory: a registered env id (``"CartPole-v1"``) or a callable returning a ``gymnasium.Env``.
    :param behavior_name: defaults to the id without its version (``CartPole-v1`` → ``CartPole``).
    :param vectorize: ``"auto"``: an id's own vectorised env where it has one, else copies;
        ``"copies"``: always N copies in a ``SyncVectorEnv``.
    :param inline_below: steps measured under this many seconds run on the loop (None: always
        in the worker thread); see :class:`~asynctrainer.envs.stepping.StepPlacement`.
    """

    def __init__(
        self,
        id_or_factory: str | Callable[[], Any],
        num_envs: int = 1,
        seed: int | None = None,
        *,
        behavior_name: str | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        vectorize: str = "auto",
        inline_below: float | None = DEFAULT_INLINE_BELOW,
    ) -> None:
        import gymnasium

        if num_envs < 1:
            raise EnvError(f"num_envs must be >= 1, got {num_envs}.")
        if vectorize not in VECTORIZE:
            raise EnvError(f"vectorize is '{vectorize}'; allowed: {', '.join(VECTORIZE)}.")
        kwargs = dict(env_kwargs or {})
        if isinstance(id_or_factory, str):
            env_id = id_or_factory
            if env_id not in gymnasium.registry:
                close = gymnasium.envs.registration.find_highest_version(None, behavior_name_for(env_id))
                hint = f" Did you mean '{behavior_name_for(env_id)}-v{close}'?" if close is not None else ""
                raise EnvError(
                    f"Unknown gymnasium env id '{env_id}'.{hint} Pass a registered id or package.module:factory."
                )

            def make() -> Any:
                return gymnasium.make(env_id, **kwargs)

            factory: Callable[[], Any] = make
            label = repr(env_id)
            default_name = behavior_name_for(env_id)
        else:
            user_factory = id_or_factory
            label = getattr(user_factory, "__qualname__", repr(user_factory))

            def make_copy() -> Any:
                return call_env_factory(user_factory, label)

            factory = make_copy
            default_name = getattr(id_or_factory, "__name__", "Env")
        self._sampler: ParameterSampler | None = None
        inner = factory

        def with_parameters() -> Any:
            return _ParameterOptions(inner(), self)

        self._copies = [with_parameters] * num_envs
        self._label = label
        own = None
        if vectorize == "auto" and isinstance(id_or_factory, str):
            own = _own_vector_env(id_or_factory, num_envs, kwargs)
        self._use(own if own is not None else self._make_copies())
        self._placement = StepPlacement(inline_below)
        self._started = False
        #: NEXT_STEP autoreset: the copies that ended in the last step (this step resets them)
        self._resetting = np.zeros(num_envs, bool)
        self._last_actions: Any = None
        self.num_envs = num_envs
        self.seed = seed
        self.behavior_name = behavior_name or default_name
        single_action = self._vec.single_action_space
        single_obs = self._vec.single_observation_space
        self._action_space = single_action
        self._obs_space = single_obs
        self._spec = BehaviorSpec((observation_spec_of(single_obs),), action_spec_of(single_action))
        self._ids = np.arange(num_envs, dtype=np.int64)
        self._lock = anyio.Lock()

    def _use(self, vec: Any) -> None:
        self._vec: Any = vec
        self._next_step = bool(_autoreset_mode(vec).name == "NEXT_STEP")

    def _make_copies(self) -> Any:
        from gymnasium.vector import AutoresetMode, SyncVectorEnv

        try:
            return SyncVectorEnv(self._copies, autoreset_mode=AutoresetMode.SAME_STEP)
        except AsyncTrainerError:
            raise
        except Exception as exc:
            raise EnvError(f"Could not create env {self._label}: {type(exc).__name__}: {exc}") from exc

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return {self.behavior_name: self._spec}

    @property
    def next_step_autoreset(self) -> bool:
        """Whether the vector env resets an ended copy on the step after its end (``NEXT_STEP``)."""
        return self._next_step

    def set_environment_parameters(self, values: Mapping[str, Any]) -> None:
        """The ``environment_parameters`` for the episodes that start from now on.

        Every copy's ``reset`` gets them as ``options`` (``{name: float}``, samplers drawn anew for
        each episode); the options of an explicit reset call win over them. An env's own
        vectorised implementation resets its episodes without options, so parameters given
        before the first reset make the env N copies instead.

        :raises EnvError: parameters for an env's own vectorised implementation after it started.
        """
        if values and not isinstance(self._vec, _sync_vector_env()):
            if self._started:
                raise EnvError(
                    f"Env {self._label} runs as its own vectorised env, whose resets take no environment "
                    "parameters; give them before the env starts (they then run it as copies)."
                )
            self._vec.close()
            self._use(self._make_copies())
        self._sampler = ParameterSampler(values) if values else None

    def parameter_options(self) -> dict[str, float]:
        """The options the next episode's reset gets (empty without environment parameters)."""
        sampler = self._sampler
        return {} if sampler is None else sampler.draw()

    # ----- conversions ------------------------------------------------------------------------

    def _obs(self, raw: Any) -> F32:
        return observations_of(self._obs_space, self._spec.observation_specs[0], raw, self.behavior_name)

    def _env_actions(self, batch: ActionBatch) -> Any:
        return env_actions(self._action_space, batch.continuous, batch.discrete)

    # ----- AsyncEnv -----------------------------------------------------------------------------

    def _reset_sync(self) -> dict[str, StepBatch]:
        obs, _ = self._vec.reset(seed=self.seed)
        self._resetting[:] = False
        decision = DecisionSteps([self._obs(obs)], np.zeros(self.num_envs, np.float32), self._ids.copy())
        return {self.behavior_name: StepBatch(decision, TerminalSteps.empty(self._spec))}

    def _step_sync(self, actions: dict[str, ActionBatch]) -> dict[str, StepBatch]:
        batch = actions.get(self.behavior_name)
        asking = self._ids[~self._resetting]
        if batch is None and not len(asking):  # every copy resets in this step: no decision was asked
            a = self._spec.action_spec
            batch = ActionBatch(
                np.zeros((0, a.continuous_size), np.float32), np.zeros((0, a.discrete_size), np.int32), asking
            )
        if batch is None or not np.array_equal(np.sort(batch.agent_id), asking):
            raise SpecError(
                f"Env '{self.behavior_name}' needs one action for each of its copies that asked for a "
                f"decision ({asking.tolist()}); got {None if batch is None else batch.agent_id.tolist()}."
            )
        env_actions_now = self._env_actions(batch)
        if not np.array_equal(batch.agent_id, self._ids):  # out of order, or copies resetting this step
            # a resetting copy ignores its action: it repeats its last
            full = self._last_actions.copy() if self._resetting.any() else np.empty_like(env_actions_now)
            full[batch.agent_id] = env_actions_now
            env_actions_now = full
        self._last_actions = env_actions_now
        obs, reward, terminated, truncated, info = self._vec.step(env_actions_now)
        reward32: F32 = np.asarray(reward, np.float32)
        terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
        next_obs = self._obs(obs)
        if self._next_step:
            return self._next_step_batch(next_obs, reward32, terminated, truncated)
        done = terminated | truncated
        if done.any():
            final = info["final_obs"]
            ended = np.flatnonzero(done)
            t_obs = self._obs(np.stack([final[i] for i in ended]))
            terminal = TerminalSteps([t_obs], reward32[ended], self._ids[ended], truncated[ended] & ~terminated[ended])
            decision_reward = np.where(done, 0.0, reward32).astype(np.float32)
        else:
            terminal = TerminalSteps.empty(self._spec)
            decision_reward = reward32
        decision = DecisionSteps([next_obs], decision_reward, self._ids.copy())
        return {self.behavior_name: StepBatch(decision, terminal)}

    def _next_step_batch(self, obs: F32, reward: F32, terminated: Any, truncated: Any) -> dict[str, StepBatch]:
        """A ``NEXT_STEP`` step: copies that ended give terminal steps (their observation is the
        final one) and ask for no decision; copies reset by this step start with no reward."""
        resetting = self._resetting
        done = (terminated | truncated) & ~resetting
        terminal = (
            TerminalSteps([obs[done]], reward[done], self._ids[done], (truncated & ~terminated)[done])
            if done.any()
            else TerminalSteps.empty(self._spec)
        )
        asking = ~done
        decision_reward = np.where(resetting, np.float32(0.0), reward)[asking]
        decision = DecisionSteps([obs[asking]], decision_reward.astype(np.float32), self._ids[asking])
        self._resetting = done
        return {self.behavior_name: StepBatch(decision, terminal)}

    async def reset(self) -> dict[str, StepBatch]:
        async with self._lock:
            self._started = True
            return await self._placement.reset(self._reset_sync)

    async def step(self, actions: dict[str, ActionBatch]) -> dict[str, StepBatch]:
        async with self._lock:
            return await self._placement.step(lambda: self._step_sync(actions))

    async def aclose(self) -> None:
        self._vec.close()


#: The values of ``GymnasiumEnv(vectorize=...)``.
VECTORIZE = ("auto", "copies")


def _sync_vector_env() -> type:
    from gymnasium.vector import SyncVectorEnv

    return SyncVectorEnv


def _autoreset_mode(vec: Any) -> Any:
    """A vector env's ``AutoresetMode`` (gymnasium's default, ``NEXT_STEP``, where it names none)."""
    from gymnasium.vector import AutoresetMode

    return AutoresetMode(vec.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP))


def _own_vector_env(env_id: str, num_envs: int, kwargs: Mapping[str, Any]) -> Any:
    """``env_id``'s own vectorised env (``vector_entry_point``), or None when it has none, it
    does not take ``kwargs``, or its autoreset mode is neither ``next_step`` nor ``same_step``."""
    import gymnasium

    if gymnasium.spec(env_id).vector_entry_point is None:
        return None
    try:
        vec = gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
    except Exception:  # e.g. a keyword only the single env takes: run it as copies
        return None
    if _autoreset_mode(vec).name not in ("NEXT_STEP", "SAME_STEP"):
        vec.close()
        return None
    return vec


def load_env(spec: str, *, num_envs: int = 1, seed: int | None = None) -> Any:
    """Resolve ``--env``: a gymnasium id, or ``package.module:factory`` returning a gymnasium env or an AsyncEnv.

    :raises EnvError: naming the id or factory that could not be loaded.
    """
    from asynctrainer.envs.base import AsyncEnv

    if ":" in spec and "/" not in spec.split(":", 1)[0]:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise EnvError(f"Could not import env module '{module_name}' from --env {spec}: {exc}.") from exc
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise EnvError(f"--env {spec}: '{module_name}' has no callable '{attr}'.")
        user_factory: Callable[[], Any] = factory
        first = call_env_factory(user_factory, spec)
        if isinstance(first, AsyncEnv):
            return first
        return gymnasium_copies(first, user_factory, spec, num_envs, seed, behavior_name=behavior_name_for(spec))
    return GymnasiumEnv(spec, num_envs, seed)


def gymnasium_copies(
    first: Any,
    factory: Callable[[], Any],
    label: str,
    num_envs: int,
    seed: int | None,
    *,
    behavior_name: str | None = None,
) -> GymnasiumEnv:
    """A :class:`GymnasiumEnv` of ``num_envs`` copies whose first is ``first``, an env ``factory`` made already.

    The other copies come from ``factory``, one call each (so a factory probed to see what it
    returns is still called once per copy); its errors become an :class:`EnvError` naming ``label``.
    """
    unused = [first]

    def make_copy() -> Any:
        return unused.pop() if unused else call_env_factory(factory, label)

    make_copy.__qualname__ = label  # how GymnasiumEnv's errors name it
    name = behavior_name or getattr(factory, "__name__", "Env")  # GymnasiumEnv's default for a factory
    return GymnasiumEnv(make_copy, num_envs, seed, behavior_name=name)

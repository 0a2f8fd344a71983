"""PettingZoo envs as an :class:`AsyncEnv`: the parallel API and the AEC (turn-based) API.

**Behaviors.** PettingZoo names agents ``<group>_<n>`` (``player_1``, ``agent_0``,
``adversary_2``); the agents of a group share one behavior, ``<group>?team=0``. For a group
named in ``self_play_groups`` each agent is a team of its own, in ``possible_agents`` order
(``player_1`` → ``player?team=0``, ``player_2`` → ``player?team=1``), so that self-play can
train the teams against each other. An agent's id is its index in ``possible_agents``.

**Parallel API.** Every live agent asks for a decision at every step. An agent that terminates
or is truncated ends its episode (a terminal step; truncated: interrupted) and leaves; an agent
that appears asks for its first decision. Once no agent is left the env is reset, and the new
episode's first decisions come in the same step.

**AEC API.** Only the agent to move (``agent_selection``) asks for a decision, with the reward
it collected since it last moved. An agent whose episode ended is stepped with ``None``, its
episode ending with what it collected; the others keep their turn order.

**Groups.** The agents of a behavior with several agents are one group (``group_id`` 1, 2, …
by behavior), so that POCA's centralised critic sees them together; PettingZoo has no group
reward, so it is 0 and each agent keeps its own reward.

**Observations and masks.** A ``Dict`` observation gives one observation per key, in order,
except ``action_mask``, which masks the discrete actions (1 = allowed, as PettingZoo has it);
an ``action_mask`` in an agent's infos does the same. ``Box`` and ``Discrete`` observations are
converted as the gymnasium adapter converts them (``envs/spaces.py``).

**Environment parameters.** The run's ``environment_parameters`` (curriculum lessons included)
go to every reset of the env, as ``reset(options=...)``.

The env's calls run in a worker thread, one at a time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np
import numpy.typing as npt

from asynctrainer.envs.spaces import action_spec_of, env_actions, observation_spec_of, observations_of
from asynctrainer.envs.spec import ActionBatch, BehaviorSpec, DecisionSteps, StepBatch, TerminalSteps
from asynctrainer.errors import EnvError, SpecError

__all__ = ["PettingZooEnv", "agent_group", "load_pettingzoo"]

F32 = npt.NDArray[np.float32]
_AGENT = re.compile(r"^(?P<group>.+?)_\d+$")
MASK_KEY = "action_mask"


def agent_group(agent: str) -> str:
    """The group of a PettingZoo agent name: ``player_1`` → ``player``; a name without ``_<n>`` is its own group."""
    match = _AGENT.match(agent)
    return match.group("group") if match else agent


@dataclass
class _Behavior:
    name: str
    spec: BehaviorSpec
    #: The observation spaces, in the spec's order, and the Dict keys they come from (None: not a Dict).
    spaces: list[Any]
    keys: list[str] | None
    action_space: Any


@dataclass
class _Step:
    """One agent's report: its observation, the reward since its last decision, how its episode stands."""

    agent: str
    obs: Any
    reward: float
    info: Mapping[str, Any]
    done: bool = False
    interrupted: bool = False


class PettingZooEnv:
    """A PettingZoo env (``ParallelEnv`` or ``AECEnv``) as an :class:`AsyncEnv`.

    :param env: the PettingZoo env, of either API.
    :param self_play_groups: agent groups whose agents are teams of their own (see the module docs).
    :param seed: the seed of the first reset (later resets continue the env's own generator).
    """

    def __init__(self, env: Any, *, self_play_groups: Collection[str] = (), seed: int | None = None) -> None:
        self._env = env
        self._aec = callable(getattr(env, "last", None))  # AECEnv has last(); ParallelEnv has not
        self.seed = seed
        agents = list(getattr(env, "possible_agents", []) or [])
        if not agents:
            raise EnvError(f"The PettingZoo env {type(env).__name__} lists no possible_agents.")
        self._ids = {agent: i for i, agent in enumerate(agents)}
        self._behavior_of: dict[str, str] = {}
        members: dict[str, list[str]] = {}
        for agent in agents:
            group = agent_group(agent)
            members.setdefault(group, []).append(agent)
            team = len(members[group]) - 1 if group in self_play_groups else 0
            self._behavior_of[agent] = f"{group}?team={team}"
        unknown = set(self_play_groups) - set(members)
        if unknown:
            raise EnvError(
                f"self_play_groups names {sorted(unknown)}, which are no agent groups of this env; "
                f"its groups: {sorted(members)}."
            )
        self._behaviors: dict[str, _Behavior] = {}
        for agent in agents:
            name = self._behavior_of[agent]
            behavior = self._describe(agent, name)
            known = self._behaviors.setdefault(name, behavior)
            if known.spec != behavior.spec:
                raise SpecError(
                    f"The agents of behavior '{name}' have different observation or action spaces "
                    f"('{agent}' differs from the first one); the agents of one group share one policy."
                )
        sizes = {name: list(self._behavior_of.values()).count(name) for name in self._behaviors}
        #: Each behavior's group id: 1, 2, … for behaviors of several agents, 0 (no group) for one.
        self._group_of = {name: 0 for name in self._behaviors}
        for name in (n for n in self._behaviors if sizes[n] > 1):
            self._group_of[name] = 1 + sum(1 for g in self._group_of.values() if g)
        self._parameters: dict[str, Any] = {}
        #: The agents that asked for a decision at the last reset or step, per behavior, in order.
        self._asked: dict[str, list[str]] = {}
        self._lock = anyio.Lock()

    def _describe(self, agent: str, name: str) -> _Behavior:
        from gymnasium import spaces

        obs_space = self._env.observation_space(agent)
        action_space = self._env.action_space(agent)
        if isinstance(obs_space, spaces.Dict):
            keys = [k for k in obs_space.spaces if k != MASK_KEY]
            subspaces = [obs_space.spaces[k] for k in keys]
            observations = tuple(observation_spec_of(s, k) for k, s in zip(keys, subspaces, strict=True))
        else:
            keys, subspaces, observations = None, [obs_space], (observation_spec_of(obs_space),)
        if not observations:
            raise SpecError(f"The observation space of agent '{agent}' has only an action mask: {obs_space}.")
        return _Behavior(name, BehaviorSpec(observations, action_spec_of(action_space)), subspaces, keys, action_space)

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return {name: b.spec for name, b in self._behaviors.items()}

    @property
    def behavior_of(self) -> Mapping[str, str]:
        """Each agent's behavior id."""
        return dict(self._behavior_of)

    def set_environment_parameters(self, values: Mapping[str, Any]) -> None:
        """The run's ``environment_parameters``: every reset from now on gets them as ``options``."""
        self._parameters = dict(values)

    # ----- conversions ------------------------------------------------------------------------

    def _observations(self, behavior: _Behavior, raws: list[Any]) -> list[F32]:
        out = []
        for i, (space, spec) in enumerate(zip(behavior.spaces, behavior.spec.observation_specs, strict=True)):
            values = raws if behavior.keys is None else [raw[behavior.keys[i]] for raw in raws]
            out.append(observations_of(space, spec, values, behavior.name))
        return out

    def _forbidden(self, behavior: _Behavior, steps: list[_Step]) -> npt.NDArray[np.bool_] | None:
        """ML-Agents' masks (True = forbidden) from the observations' or infos' ``action_mask``."""
        size = behavior.spec.action_spec.mask_size
        if not size:
            return None
        masks = []
        for step in steps:
            given = step.obs.get(MASK_KEY) if isinstance(step.obs, Mapping) else None
            if given is None:
                given = step.info.get(MASK_KEY)
            masks.append(np.ones(size, bool) if given is None else np.asarray(given).reshape(size) != 0)
        allowed = np.stack(masks)
        return None if allowed.all() else ~allowed

    def _rows(self, behavior: _Behavior, steps: list[_Step]) -> tuple[list[F32], F32, npt.NDArray[np.int64]]:
        """The observations, rewards and agent ids of some agents' reports."""
        return (
            self._observations(behavior, [s.obs for s in steps]),
            np.array([s.reward for s in steps], np.float32),
            np.array([self._ids[s.agent] for s in steps], np.int64),
        )

    def _batches(self, decisions: list[_Step], terminals: list[_Step]) -> dict[str, StepBatch]:
        out: dict[str, StepBatch] = {}
        self._asked = {}
        for name, behavior in self._behaviors.items():
            asks = [s for s in decisions if self._behavior_of[s.agent] == name]
            ends = [s for s in terminals if self._behavior_of[s.agent] == name]
            if not asks and not ends:
                continue
            spec, group = behavior.spec, self._group_of[name]
            decision = DecisionSteps.empty(spec)
            if asks:
                decision = DecisionSteps(
                    *self._rows(behavior, asks), self._forbidden(behavior, asks), *_groups(group, len(asks))
                )
            terminal = TerminalSteps.empty(spec)
            if ends:
                interrupted = np.array([s.interrupted for s in ends], bool)
                terminal = TerminalSteps(*self._rows(behavior, ends), interrupted, *_groups(group, len(ends)))
            out[name] = StepBatch(decision, terminal)
            if asks:
                self._asked[name] = [s.agent for s in asks]
        return out

    def _actions_by_agent(self, actions: Mapping[str, ActionBatch]) -> dict[str, Any]:
        by_agent: dict[str, Any] = {}
        for name, agents in self._asked.items():
            batch = actions.get(name)
            if batch is None or len(batch.agent_id) != len(agents):
                raise SpecError(f"PettingZoo env: behavior '{name}' needs actions for its {len(agents)} agents.")
            values = env_actions(self._behaviors[name].action_space, batch.continuous, batch.discrete)
            order = {int(agent_id): i for i, agent_id in enumerate(batch.agent_id)}
            for agent in agents:
                by_agent[agent] = values[order[self._ids[agent]]]
        return by_agent

    # ----- the parallel API -------------------------------------------------------------------

    def _reset_env(self, seed: int | None) -> Any:
        """The env's reset, with the run's environment parameters as ``options`` when there are any."""
        if self._parameters:
            return self._env.reset(seed=seed, options=dict(self._parameters))
        return self._env.reset(seed=seed)

    def _parallel_reset(self, seed: int | None) -> list[_Step]:
        obs, infos = self._reset_env(seed)
        return [_Step(agent, obs[agent], 0.0, infos.get(agent, {})) for agent in self._env.agents]

    def _parallel_step(self, actions: Mapping[str, ActionBatch]) -> dict[str, StepBatch]:
        by_agent = self._actions_by_agent(actions)
        obs, rewards, terminations, truncations, infos = self._env.step(by_agent)
        decisions, terminals = [], []
        for agent, value in obs.items():
            reward = float(rewards.get(agent, 0.0))
            terminated, truncated = bool(terminations.get(agent)), bool(truncations.get(agent))
            step = _Step(agent, value, reward, infos.get(agent, {}), terminated or truncated)
            if step.done:
                step.interrupted = truncated and not terminated
                terminals.append(step)
            else:
                decisions.append(step)
        if not self._env.agents:
            decisions = self._parallel_reset(None)
        return self._batches(decisions, terminals)

    # ----- the AEC API --------------------------------------------------------------------------

    def _aec_advance(self, terminals: list[_Step]) -> list[_Step]:
        """Step the agents whose episode ended (recording it) until one must decide; reset when none is left."""
        env = self._env
        while True:
            if not env.agents:
                self._reset_env(None)
            agent = env.agent_selection
            obs, reward, terminated, truncated, info = env.last()
            if not (terminated or truncated):
                return [_Step(agent, obs, float(reward), info)]
            terminals.append(_Step(agent, obs, float(reward), info, True, bool(truncated and not terminated)))
            env.step(None)

    def _aec_reset(self, seed: int | None) -> list[_Step]:
        self._reset_env(seed)
        return self._aec_advance([])

    def _aec_step(self, actions: Mapping[str, ActionBatch]) -> dict[str, StepBatch]:
        by_agent = self._actions_by_agent(actions)
        for agent, action in by_agent.items():  # one: the agent to move
            if agent != self._env.agent_selection:
                raise EnvError(f"PettingZoo AEC env: '{self._env.agent_selection}' is to move, not '{agent}'.")
            self._env.step(action.item() if np.ndim(action) == 0 else action)
        terminals: list[_Step] = []
        decisions = self._aec_advance(terminals)
        return self._batches(decisions, terminals)

    # ----- AsyncEnv -----------------------------------------------------------------------------

    def _reset_sync(self) -> dict[str, StepBatch]:
        first = self._aec_reset(self.seed) if self._aec else self._parallel_reset(self.seed)
        return self._batches(first, [])

    def _step_sync(self, actions: dict[str, ActionBatch]) -> dict[str, StepBatch]:
        return self._aec_step(actions) if self._aec else self._parallel_step(actions)

    async def reset(self) -> dict[str, StepBatch]:
        async with self._lock:
            return await anyio.to_thread.run_sync(self._call, self._reset_sync)

    async def step(self, actions: dict[str, ActionBatch]) -> dict[str, StepBatch]:
        async with self._lock:
            return await anyio.to_thread.run_sync(self._call, lambda: self._step_sync(actions))

    def _call(self, fn: Callable[[], dict[str, StepBatch]]) -> dict[str, StepBatch]:
        try:
            return fn()
        except (EnvError, SpecError):
            raise
        except Exception as exc:
            raise EnvError(f"The PettingZoo env {type(self._env).__name__} raised {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        self._env.close()


def _groups(group: int, n: int) -> tuple[npt.NDArray[np.int64] | None, F32 | None]:
    """``group_id`` and ``group_reward`` for ``n`` agents of a behavior (None, None: no group)."""
    if not group:
        return None, None
    return np.full(n, group, np.int64), np.zeros(n, np.float32)


def load_pettingzoo(
    spec: str, *, seed: int | None = None, self_play: Callable[[str], bool] | None = None
) -> PettingZooEnv:
    """``--env pettingzoo:<id>``: an id of PettingZoo's registry (``classic/tictactoe-v3``; its
    parallel version when it has one) or a module with ``parallel_env()`` or, failing that, ``env()``.

    :param self_play: tells which agent groups train by self-play (the CLI asks the run config).
    :raises EnvError: naming the id when PettingZoo is missing, the id is unknown, or making the env fails.
    """
    import importlib

    target = spec.removeprefix("pettingzoo:")
    try:
        import pettingzoo
    except ImportError as exc:
        raise EnvError(
            f"--env {spec} needs PettingZoo, which is not installed: pip install 'asynctrainer[pettingzoo]'."
        ) from exc
    factory: Callable[[], Any] | None
    if target in pettingzoo.parallel_registry or target in pettingzoo.aec_registry:
        api = "parallel" if target in pettingzoo.parallel_registry else "aec"
        factory = lambda: pettingzoo.make(api, target)  # noqa: E731
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise EnvError(
                f"--env {spec}: '{target}' is neither an id of PettingZoo's registry (e.g. classic/tictactoe-v3; "
                f"pettingzoo.pprint_registry() lists them) nor an importable module: {exc}."
            ) from exc
        factory = getattr(module, "parallel_env", None) or getattr(module, "env", None)
        if not callable(factory):
            raise EnvError(f"--env {spec}: the module '{target}' has neither parallel_env() nor env().")
    try:
        env = factory()
    except Exception as exc:
        raise EnvError(f"--env {spec}: creating the env raised {type(exc).__name__}: {exc}") from exc
    groups = dict.fromkeys(agent_group(agent) for agent in getattr(env, "possible_agents", []))
    chosen = {g for g in groups if self_play is not None and self_play(g)}
    return PettingZooEnv(env, self_play_groups=chosen, seed=seed)

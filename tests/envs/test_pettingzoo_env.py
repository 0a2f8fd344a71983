"""The PettingZoo adapter: real PettingZoo envs (classic tic-tac-toe, rock-paper-scissors) and
small ``ParallelEnv`` subclasses written here to make agents come and go on a known schedule."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import pettingzoo
import pytest
from gymnasium import spaces
from pettingzoo import ParallelEnv

from asynctrainer.envs.pettingzoo_env import PettingZooEnv, agent_group, load_pettingzoo
from asynctrainer.envs.spec import ActionBatch, StepBatch
from asynctrainer.errors import EnvError, SpecError


def discrete(batches: Mapping[str, StepBatch], choose: Mapping[str, list[int]]) -> dict[str, ActionBatch]:
    """Actions for every behavior that asked: ``choose[name]`` gives one discrete action per agent asked."""
    out = {}
    for name, batch in batches.items():
        n = len(batch.decision)
        if n:
            values = np.array(choose[name], np.int32).reshape(n, 1)
            out[name] = ActionBatch(np.zeros((n, 0), np.float32), values, batch.decision.agent_id)
    return out


def test_agent_groups_follow_pettingzoo_names() -> None:
    assert agent_group("player_1") == "player"
    assert agent_group("adversary_0") == "adversary"
    assert agent_group("red_team_12") == "red_team"
    assert agent_group("solo") == "solo"


async def test_aec_asks_only_the_agent_to_move_and_ends_with_both_rewards() -> None:
    env = PettingZooEnv(pettingzoo.make("aec", "classic/tictactoe-v3"), self_play_groups={"player"}, seed=0)
    assert env.behavior_of == {"player_1": "player?team=0", "player_2": "player?team=1"}
    spec = env.behavior_specs["player?team=0"]
    assert spec.action_spec.discrete_branches == (9,)
    assert [o.shape for o in spec.observation_specs] == [(3, 3, 2)]  # the Dict's mask is not an observation

    steps = await env.reset()
    assert list(steps) == ["player?team=0"]
    assert steps["player?team=0"].decision.agent_id.tolist() == [0]
    assert steps["player?team=0"].decision.action_mask is None  # an empty board: every move allowed
    assert steps["player?team=0"].decision.group_id is None  # one agent per team: no group
    # player_1 takes 0, 1, 2 (a line); player_2 takes 3 and 4.
    movers = ["player?team=1", "player?team=0", "player?team=1", "player?team=0"]
    for move, (cell, mover) in enumerate(zip([0, 3, 1, 4], movers, strict=True)):
        name = "player?team=0" if move % 2 == 0 else "player?team=1"
        steps = await env.step(discrete(steps, {name: [cell]}))
        assert list(steps) == [mover]
        decision = steps[mover].decision
        assert decision.agent_id.tolist() == [0 if mover.endswith("0") else 1]
        assert decision.reward.tolist() == [0.0]
        assert decision.action_mask is not None
        assert np.flatnonzero(decision.action_mask[0]).tolist() == sorted([0, 3, 1, 4][: move + 1])
    steps = await env.step(discrete(steps, {"player?team=0": [2]}))
    loser, winner = steps["player?team=1"], steps["player?team=0"]
    assert loser.terminal.reward.tolist() == [-1.0] and loser.terminal.interrupted.tolist() == [False]
    assert winner.terminal.reward.tolist() == [1.0] and winner.terminal.agent_id.tolist() == [0]
    assert len(loser.decision) == 0
    # The next game starts in the same step: player_1 moves first on an empty board.
    assert winner.decision.agent_id.tolist() == [0] and winner.decision.action_mask is None
    assert float(np.abs(winner.decision.obs[0]).sum()) == 0.0
    await env.aclose()


async def test_aec_without_self_play_is_one_behavior_for_both_players() -> None:
    env = PettingZooEnv(pettingzoo.make("aec", "classic/tictactoe-v3"), seed=0)
    assert set(env.behavior_of.values()) == {"player?team=0"}
    steps = await env.reset()
    steps = await env.step(discrete(steps, {"player?team=0": [4]}))
    assert steps["player?team=0"].decision.agent_id.tolist() == [1]  # player_2's turn, same behavior
    await env.aclose()


async def test_parallel_agents_act_together_and_truncation_is_interrupted() -> None:
    env = PettingZooEnv(pettingzoo.make("parallel", "classic/rps-v2", max_cycles=3), seed=0)
    assert list(env.behavior_specs) == ["player?team=0"]
    steps = await env.reset()
    assert steps["player?team=0"].decision.agent_id.tolist() == [0, 1]
    group_id = steps["player?team=0"].decision.group_id  # the agents of one behavior: one group, for POCA
    assert group_id is not None and group_id.tolist() == [1, 1]
    rock, paper = 0, 1
    steps = await env.step(discrete(steps, {"player?team=0": [rock, paper]}))
    assert steps["player?team=0"].decision.reward.tolist() == [-1.0, 1.0]
    steps = await env.step(discrete(steps, {"player?team=0": [paper, rock]}))
    assert steps["player?team=0"].decision.reward.tolist() == [1.0, -1.0]
    steps = await env.step(discrete(steps, {"player?team=0": [rock, rock]}))
    batch = steps["player?team=0"]
    assert batch.terminal.agent_id.tolist() == [0, 1]
    assert batch.terminal.interrupted.tolist() == [True, True]  # max_cycles: a truncation
    assert batch.terminal.reward.tolist() == [0.0, 0.0]
    assert batch.decision.agent_id.tolist() == [0, 1]  # reset: the next episode's first decisions
    await env.aclose()


class ArrivalsParallelEnv(ParallelEnv):  # type: ignore[misc]
    """A real ``ParallelEnv`` whose agents come and go: walker_0 from the start, walker_1 joins at
    step 1, walker_0 terminates at step 2 as walker_2 joins, the rest are truncated at step 3.

    Its observation is a Dict with an ``action_mask`` (or, with ``mask_in_infos``, the mask is in
    the infos); each agent observes ``[its index, the step]``; ``received`` records every step's actions.
    """

    metadata: ClassVar[dict[str, Any]] = {"name": "arrivals_v0"}

    def __init__(self, mask_in_infos: bool = False) -> None:
        self.possible_agents = ["walker_0", "walker_1", "walker_2"]
        self.agents: list[str] = []
        self.mask_in_infos = mask_in_infos
        self.received: list[dict[str, int]] = []
        self.t = 0

    def observation_space(self, agent: str) -> spaces.Space[Any]:
        position = spaces.Box(-10.0, 10.0, (2,), np.float32)
        if self.mask_in_infos:
            return position
        return spaces.Dict({"position": position, "action_mask": spaces.MultiBinary(3)})

    def action_space(self, agent: str) -> spaces.Space[Any]:
        return spaces.Discrete(3)

    def _report(self) -> tuple[dict[str, Any], dict[str, Any]]:
        obs: dict[str, Any] = {}
        infos: dict[str, Any] = {}
        for agent in self.agents:
            position = np.array([self.possible_agents.index(agent), self.t], np.float32)
            mask = np.array([1, 1, 0], np.int8) if agent == "walker_1" else np.ones(3, np.int8)
            obs[agent] = position if self.mask_in_infos else {"position": position, "action_mask": mask}
            infos[agent] = {"action_mask": mask} if self.mask_in_infos else {}
        return obs, infos

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        self.t = 0
        self.agents = ["walker_0"]
        return self._report()

    def step(self, actions: dict[str, Any]) -> Any:
        self.received.append({agent: int(a) for agent, a in actions.items()})
        self.t += 1
        rewards = {agent: float(self.t) for agent in self.agents}
        terminations = {agent: False for agent in self.agents}
        truncations = {agent: False for agent in self.agents}
        if self.t == 1:
            self.agents = ["walker_0", "walker_1"]
        elif self.t == 2:
            terminations["walker_0"] = True
            self.agents = ["walker_0", "walker_1", "walker_2"]  # walker_0 reports its end, then leaves
        else:
            truncations.update({agent: True for agent in self.agents})
        obs, infos = self._report()
        for agent in self.agents:
            rewards.setdefault(agent, 0.0)
            terminations.setdefault(agent, False)
            truncations.setdefault(agent, False)
        self.agents = [a for a in self.agents if not (terminations[a] or truncations[a])]
        return obs, rewards, terminations, truncations, infos


@pytest.mark.parametrize("mask_in_infos", [False, True])
async def test_parallel_agents_that_come_and_go_get_their_own_steps_and_masks(mask_in_infos: bool) -> None:
    raw = ArrivalsParallelEnv(mask_in_infos)
    env = PettingZooEnv(raw, seed=0)
    name = "walker?team=0"
    assert [o.shape for o in env.behavior_specs[name].observation_specs] == [(2,)]

    steps = await env.reset()
    assert steps[name].decision.agent_id.tolist() == [0]
    steps = await env.step(discrete(steps, {name: [2]}))
    decision = steps[name].decision
    assert decision.agent_id.tolist() == [0, 1]  # walker_1 joined
    assert decision.reward.tolist() == [1.0, 0.0]
    assert decision.obs[0].tolist() == [[0.0, 1.0], [1.0, 1.0]]
    assert decision.action_mask is not None
    assert decision.action_mask.tolist() == [[False, False, False], [False, False, True]]

    steps = await env.step(discrete(steps, {name: [0, 1]}))
    batch = steps[name]
    assert batch.terminal.agent_id.tolist() == [0] and batch.terminal.interrupted.tolist() == [False]
    assert batch.terminal.reward.tolist() == [2.0]
    assert batch.decision.agent_id.tolist() == [1, 2]  # walker_2 joined as walker_0 left

    steps = await env.step(discrete(steps, {name: [1, 2]}))
    batch = steps[name]
    assert batch.terminal.agent_id.tolist() == [1, 2] and batch.terminal.interrupted.tolist() == [True, True]
    assert batch.decision.agent_id.tolist() == [0]  # everyone left: reset
    # Each step received actions for exactly the agents that had asked, in the env's own names.
    assert raw.received == [{"walker_0": 2}, {"walker_0": 0, "walker_1": 1}, {"walker_1": 1, "walker_2": 2}]
    await env.aclose()


async def test_missing_actions_for_an_agent_that_asked_are_refused() -> None:
    env = PettingZooEnv(pettingzoo.make("parallel", "classic/rps-v2"), seed=0)
    steps = await env.reset()
    one = ActionBatch(np.zeros((1, 0), np.float32), np.zeros((1, 1), np.int32), np.array([0]))
    with pytest.raises(SpecError, match="needs actions for its 2 agents"):
        await env.step({"player?team=0": one})
    with pytest.raises(SpecError, match="player"):
        await env.step({})
    steps = await env.step(discrete(steps, {"player?team=0": [0, 0]}))  # still usable
    assert steps["player?team=0"].decision.agent_id.tolist() == [0, 1]
    await env.aclose()


class MixedSpacesParallelEnv(ArrivalsParallelEnv):
    """walker_2 observes three numbers where the other walkers observe two."""

    def observation_space(self, agent: str) -> spaces.Space[Any]:
        return spaces.Box(-1.0, 1.0, (3 if agent == "walker_2" else 2,), np.float32)


class RaisingParallelEnv(ArrivalsParallelEnv):
    def step(self, actions: dict[str, Any]) -> Any:
        raise RuntimeError("physics exploded")


async def test_bad_envs_are_clear_errors() -> None:
    with pytest.raises(SpecError, match="walker_2"):
        PettingZooEnv(MixedSpacesParallelEnv())
    with pytest.raises(EnvError, match=r"\['goalie'\].*its groups: \['walker'\]"):
        PettingZooEnv(ArrivalsParallelEnv(), self_play_groups={"goalie"})
    empty = ArrivalsParallelEnv()
    empty.possible_agents = []
    with pytest.raises(EnvError, match="possible_agents"):
        PettingZooEnv(empty)
    env = PettingZooEnv(RaisingParallelEnv(), seed=0)
    steps = await env.reset()
    with pytest.raises(EnvError, match="RaisingParallelEnv raised RuntimeError: physics exploded"):
        await env.step(discrete(steps, {"walker?team=0": [0]}))


@pytest.fixture
def pz_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A module on sys.path with ``parallel_env()`` (the arrivals env), as ``--env pettingzoo:<module>`` loads."""
    module = ModuleType("arrivals_pz_for_test")
    module.parallel_env = ArrivalsParallelEnv  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


def test_load_pettingzoo_finds_the_factory_and_asks_which_groups_self_play(pz_module: ModuleType) -> None:
    asked: list[str] = []

    def self_play(group: str) -> bool:
        asked.append(group)
        return True

    env = load_pettingzoo(f"pettingzoo:{pz_module.__name__}", seed=3, self_play=self_play)
    assert asked == ["walker"]
    assert env.behavior_of == {"walker_0": "walker?team=0", "walker_1": "walker?team=1", "walker_2": "walker?team=2"}
    aec = load_pettingzoo("pettingzoo:classic/tictactoe-v3")  # a registry id with only the AEC API
    assert aec._aec and set(aec.behavior_of.values()) == {"player?team=0"}
    parallel = load_pettingzoo("pettingzoo:classic/rps-v2")  # the parallel API, where the registry has it
    assert not parallel._aec


def test_load_pettingzoo_names_what_it_could_not_load(pz_module: ModuleType) -> None:
    with pytest.raises(EnvError, match="'no_such_pz' is neither an id of PettingZoo's registry"):
        load_pettingzoo("pettingzoo:no_such_pz")
    with pytest.raises(EnvError, match="the module 'numpy' has neither parallel_env"):
        load_pettingzoo("pettingzoo:numpy")
    pz_module.parallel_env = lambda: (_ for _ in ()).throw(ValueError("no map"))  # type: ignore[attr-defined]
    with pytest.raises(EnvError, match="creating the env raised ValueError: no map"):
        load_pettingzoo(f"pettingzoo:{pz_module.__name__}")


class OptionsParallelEnv(ArrivalsParallelEnv):
    """Records the options of every reset."""

    def __init__(self) -> None:
        super().__init__()
        self.options: list[dict[str, Any] | None] = []

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        self.options.append(options)
        return super().reset(seed, options)


async def test_environment_parameters_reach_every_reset_as_options() -> None:
    raw = OptionsParallelEnv()
    env = PettingZooEnv(raw, seed=0)
    await env.reset()
    env.set_environment_parameters({"wall": 2.0})
    steps = await env.reset()
    for _ in range(3):  # to the episode's end: the env resets itself
        steps = await env.step(discrete(steps, {"walker?team=0": [0] * len(steps["walker?team=0"].decision)}))
    assert raw.options == [None, {"wall": 2.0}, {"wall": 2.0}]


def test_without_pettingzoo_installed_the_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pettingzoo", None)  # import pettingzoo now raises ImportError
    with pytest.raises(
        EnvError, match=r"needs PettingZoo, which is not installed: pip install 'asynctrainer\[pettingzoo\]'"
    ):
        load_pettingzoo("pettingzoo:classic/tictactoe-v3")

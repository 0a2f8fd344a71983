"""One ML-Agents (release 22, mlagents 1.1.0, PyTorch) training run for ``vs_mlagents.py``, in ML-Agents' own venv.

    python mlagents_worker.py CONFIG.yaml RESULTS_DIR SEED     # with $VS_CASE, $VS_REPORT, $VS_SPAWN

It does what ``mlagents-learn CONFIG --run-id ... --seed SEED`` does (trainer plugins, torch
settings, stats writers, TrainerController, ONNX export at the end), except that the env is
``vs_envs``' AsyncEnv behind :class:`BaseEnvAdapter` in ML-Agents' ``SimpleEnvManager``
(the env in this process, as ML-Agents' own trainer tests run SimpleEnvironment) instead of a
Unity player behind ``SubprocessEnvManager``. Agent ids are fresh for each episode, as Unity's are.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import vs_envs
import yaml
from mlagents import torch_utils
from mlagents.plugins.stats_writer import register_stats_writer_plugins
from mlagents.plugins.trainer_type import register_trainer_plugins
from mlagents.trainers.environment_parameter_manager import EnvironmentParameterManager
from mlagents.trainers.settings import RunOptions
from mlagents.trainers.simple_env_manager import SimpleEnvManager
from mlagents.trainers.stats import StatsReporter
from mlagents.trainers.trainer import TrainerFactory
from mlagents.trainers.trainer_controller import TrainerController
from mlagents_envs import base_env as ml
from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel

from asynctrainer.envs.spec import ActionBatch, StepBatch

# torch >= 2.9 exports with dynamo (onnxscript, numpy 2) by default; ML-Agents was written for
# the TorchScript exporter of torch 2.1, which dynamo=False restores (mlagents' files unchanged).
_export = torch.onnx.export


def _torchscript_export(*args: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("dynamo", False)
    return _export(*args, **kwargs)


torch.onnx.export = _torchscript_export  # type: ignore[assignment]


class BaseEnvAdapter(ml.BaseEnv):
    """An asynctrainer AsyncEnv as ML-Agents' ``BaseEnv``, stepped on an event loop of its own."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.loop = asyncio.new_event_loop()
        self._specs = {name: self._spec(spec) for name, spec in env.behavior_specs.items()}
        self._steps: dict[str, tuple[ml.DecisionSteps, ml.TerminalSteps]] = {}
        self._actions: dict[str, ActionBatch] = {}
        self._ours: dict[str, np.ndarray] = {}  # the asynctrainer ids of the last decision, in order
        self._episode: dict[tuple[str, int], int] = {}  # (behavior, asynctrainer id) -> ML-Agents id
        self._next_id = 0

    @staticmethod
    def _spec(spec: Any) -> ml.BehaviorSpec:
        obs = [
            ml.ObservationSpec(
                tuple(o.shape),
                tuple(ml.DimensionProperty(int(d)) for d in o.dimension_properties)
                or (ml.DimensionProperty.NONE,) * len(o.shape),  # a vector's, as Unity sends it
                ml.ObservationType.GOAL_SIGNAL if o.observation_type == "goal_signal" else ml.ObservationType.DEFAULT,
                o.name,
            )
            for o in spec.observation_specs
        ]
        a = spec.action_spec
        return ml.BehaviorSpec(obs, ml.ActionSpec(a.continuous_size, tuple(a.discrete_branches)))

    def _ml_ids(self, name: str, ours: np.ndarray, ending: bool) -> np.ndarray:
        ids = np.empty(len(ours), np.int32)
        for i, agent in enumerate(ours.tolist()):
            key = (name, agent)
            if key not in self._episode:
                self._episode[key] = self._next_id
                self._next_id += 1
            ids[i] = self._episode.pop(key) if ending else self._episode[key]
        return ids

    def _take(self, batches: dict[str, StepBatch]) -> None:
        for name, batch in batches.items():
            t, d = batch.terminal, batch.decision
            terminal_ids = self._ml_ids(name, t.agent_id, ending=True)  # before the decisions: a new episode
            decision_ids = self._ml_ids(name, d.agent_id, ending=False)
            n, k = len(d.agent_id), len(t.agent_id)
            mask = None if d.action_mask is None else self._branch_masks(name, d.action_mask)
            self._steps[name] = (
                ml.DecisionSteps(
                    list(d.obs), d.reward, decision_ids, mask, np.zeros(n, np.int32), np.zeros(n, np.float32)
                ),
                ml.TerminalSteps(
                    list(t.obs), t.reward, t.interrupted, terminal_ids, np.zeros(k, np.int32), np.zeros(k, np.float32)
                ),
            )
            self._ours[name] = d.agent_id

    def _branch_masks(self, name: str, mask: np.ndarray) -> list[np.ndarray]:
        splits = np.cumsum(self._specs[name].action_spec.discrete_branches)[:-1]
        return list(np.split(mask, splits, axis=1))

    # ----- BaseEnv ------------------------------------------------------------------------------

    @property
    def behavior_specs(self) -> ml.BehaviorMapping:
        return ml.BehaviorMapping(self._specs)

    def reset(self) -> None:
        self._episode.clear()
        self._take(self.loop.run_until_complete(self.env.reset()))

    def step(self) -> None:
        actions = {}
        for name, ours in self._ours.items():
            batch = self._actions.pop(name, None)
            if batch is None:  # no action set: ML-Agents' default is zeros
                a = self._specs[name].action_spec
                batch = ActionBatch(
                    np.zeros((len(ours), a.continuous_size), np.float32),
                    np.zeros((len(ours), a.discrete_size), np.int32),
                    ours,
                )
            actions[name] = batch
        self._take(self.loop.run_until_complete(self.env.step(actions)))

    def set_actions(self, behavior_name: str, action: ml.ActionTuple) -> None:
        ours = self._ours[behavior_name]
        self._actions[behavior_name] = ActionBatch(
            np.asarray(action.continuous, np.float32).reshape(len(ours), -1),
            np.asarray(action.discrete, np.int32).reshape(len(ours), -1),
            ours,
        )

    def set_action_for_agent(self, behavior_name: str, agent_id: int, action: ml.ActionTuple) -> None:
        raise NotImplementedError("SimpleEnvManager sets the actions of a whole behavior")

    def get_steps(self, behavior_name: str) -> tuple[ml.DecisionSteps, ml.TerminalSteps]:
        return self._steps[behavior_name]

    def close(self) -> None:
        self.loop.run_until_complete(self.env.aclose())
        self.loop.close()


def main(config_path: str, results_dir: str, seed: int) -> None:
    register_trainer_plugins()  # as mlagents-learn does before reading the config
    config = yaml.safe_load(Path(config_path).read_text())
    config["checkpoint_settings"] = {"run_id": f"mlagents-{seed}", "results_dir": results_dir, "force": True}
    config.setdefault("env_settings", {})["seed"] = seed
    config["torch_settings"] = {"device": "cpu"}
    options = RunOptions.from_dict(config)
    torch_utils.set_torch_config(options.torch_settings)
    checkpoint = options.checkpoint_settings
    os.makedirs(checkpoint.run_logs_dir, exist_ok=True)
    for writer in register_stats_writer_plugins(options):
        StatsReporter.add_writer(writer)
    parameters = EnvironmentParameterManager(options.environment_parameters, seed, restore=False)
    factory = TrainerFactory(
        trainer_config=options.behaviors,
        output_path=checkpoint.write_path,
        train_model=True,
        load_model=False,
        seed=seed,
        param_manager=parameters,
        multi_gpu=False,
    )
    controller = TrainerController(factory, checkpoint.write_path, checkpoint.run_id, parameters, True, seed)
    env = vs_envs.make_env()
    manager = SimpleEnvManager(BaseEnvAdapter(env), EnvironmentParametersChannel())
    try:
        controller.start_learning(manager)
    finally:
        manager.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))

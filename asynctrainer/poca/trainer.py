"""MA-POCA on the asyncio runtime: PPO's actor and update schedule, a centralised critic per group.

Everything PPO does (buffer, schedules, normaliser, reward signals, behavioral cloning, snapshots,
checkpoints) is :class:`~asynctrainer.ppo.trainer.PPOTrainer`'s; POCA changes the critic and the
advantages. Each trajectory carries its agent's group (``Trajectory.group``: the groupmates'
observations and actions at each step, the group reward, who was still playing at the end):

- the value ``V`` of each step and of the bootstrap reads every agent of the group
  (:class:`~asynctrainer.poca.networks.GroupCritic`); an agent that ended before its group
  bootstraps from ``V`` of its last observation and the groupmates still playing, so it keeps
  its share of the group reward that comes later;
- the advantage of an agent's action is its λ-return minus its counterfactual baseline ``b``
  (:func:`~asynctrainer.poca.advantages.counterfactual_advantages`), averaged over the reward
  signals and normalised over the buffer;
- the loss is ``L_clip + 0.5 (L_V + 0.5 L_b) − β H``, ``L_V`` and ``L_b`` regressing ``V`` and
  ``b`` to the λ-returns, with one Adam over the actor and the critic (as ML-Agents).

Agents without a group are groups of one. The actor (what acts, is exported and served) is
PPO's, so snapshots and ONNX files are the same as PPO's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.nn.graph_loops import PerWidth, minibatch_rows, sum_over_range
from asynctrainer.nn.tf_setup import tf
from asynctrainer.poca.advantages import counterfactual_advantages
from asynctrainer.poca.networks import GroupCritic, flat_actions
from asynctrainer.ppo import loss
from asynctrainer.ppo.trainer import PPOTrainer, apply_update, minibatch_width
from asynctrainer.runtime.trajectory import Trajectory

__all__ = ["POCATrainer"]

F32 = npt.NDArray[np.float32]
#: Weight of the baseline's loss within the critic's (ML-Agents': 0.5 (L_V + 0.5 L_b)).
BASELINE_WEIGHT = 0.5


@dataclass(frozen=True)
class _GroupBatch:
    """The buffer's group inputs for one update: groupmates' observations (NaN: absent) and actions,
    and the baselines before the update."""

    mates_obs: F32
    mates_actions: F32
    baselines: F32


class POCATrainer(PPOTrainer):
    """MA-POCA with ML-Agents' settings (``trainer_type: poca``); see the module docs."""

    critic_in_actor = False
    multi_agent = True

    def __init__(self, behavior_name: str, trainer_settings: Any, *, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(behavior_name, trainer_settings, seed=seed, **kwargs)
        self.critic: GroupCritic | None = None
        self._baseline_fn: Any = None
        self._group_batch: _GroupBatch | None = None
        #: Per agent, the group reward so far in its current episode (loop side).
        self._group_sums: dict[str, float] = {}

    # ----- loop side ------------------------------------------------------------------------------

    def _process_trajectory(self, trajectory: Trajectory) -> None:
        """PPO's accounting, and ``Environment/Group Cumulative Reward``: an agent's summed group reward
        over its episode, reported when its whole group is done (one that ended early is left out)."""
        super()._process_trajectory(trajectory)
        group = trajectory.group
        if group is None:
            return
        total = self._group_sums.pop(trajectory.agent_id, 0.0) + float(group.rewards.sum())
        if not trajectory.done_reached:
            self._group_sums[trajectory.agent_id] = total
        elif group.all_done:
            self.stats_reporter.add_stat("Environment/Group Cumulative Reward", total)

    # ----- networks -------------------------------------------------------------------------------

    def _create_critic(self, spec: BehaviorSpec) -> None:
        ns = self.trainer_settings.network_settings
        self.critic = GroupCritic(
            spec,
            hidden_units=ns.hidden_units,
            num_layers=ns.num_layers,
            value_heads=len(self._heads()),
            vis_encode_type=ns.vis_encode_type,
            seed=self.seed,
        )

    def _trainable_variables(self) -> list[Any]:
        assert self.net is not None and self.critic is not None
        return list(self.net.actor_variables) + self.critic.trainable_variables

    def _named_variables(self) -> dict[str, Any]:
        assert self.net is not None and self.critic is not None
        return {**self.net.named_variables(), **self.critic.named_variables()}

    def _compile(self, spec: BehaviorSpec) -> None:
        t = tf()
        net, critic = self.net, self.critic
        assert net is not None and critic is not None
        optimizer = self.optimizer
        variables = self._trainable_variables()
        a = spec.action_spec
        f32 = t.float32
        heads = len(self._heads())
        o = spec.observation_size
        own = t.TensorSpec([None, o], f32)
        mates = t.TensorSpec([None, None, o], f32)
        actions = t.TensorSpec([None, None, critic.action_size], f32)

        @t.function(input_signature=[own, mates], autograph=False)
        def value_fn(obs: Any, mates_obs: Any) -> Any:
            return critic.value(obs, mates_obs)

        @t.function(input_signature=[own, mates, actions], autograph=False)
        def baseline_fn(obs: Any, mates_obs: Any, mates_actions: Any) -> Any:
            return critic.baseline(obs, mates_obs, mates_actions)

        def signature(width: int) -> list[Any]:
            return [
                own,  # obs
                t.TensorSpec([None, a.continuous_size], f32),  # continuous (raw)
                t.TensorSpec([None, a.discrete_size], t.int32),  # discrete
                t.TensorSpec([None, a.mask_size], f32),  # masks, 1 = allowed
                t.TensorSpec([None], f32),  # behavior log-probs
                t.TensorSpec([None], f32),  # advantages (counterfactual)
                t.TensorSpec([None, None], f32),  # λ-returns, one column per head
                t.TensorSpec([None, width], t.int32),  # minibatch indices [n_minibatches, width]
                t.TensorSpec([], f32),  # beta
                t.TensorSpec([], f32),  # epsilon
                t.TensorSpec([], f32),  # learning rate
                t.TensorSpec([None], f32),  # PPO's sequence inputs, unused: POCA has no memory
                t.TensorSpec([None, 0], f32),
                t.TensorSpec([None, 0], f32),
                mates,  # groupmates' observations (NaN rows: absent)
                actions,  # groupmates' flat actions
            ]

        @t.function(autograph=False)
        def train_fn(obs, cont, disc, masks, old_logp, adv, returns, idx, beta, epsilon, lr, _v, _a, _c, m_obs, m_act):  # type: ignore[no-untyped-def]
            optimizer.learning_rate = lr
            n_mb = t.shape(idx)[0]

            def minibatch(i: Any) -> Any:
                b = idx[i]
                mb_obs, mb_mates = t.gather(obs, b), t.gather(m_obs, b)
                mb_adv, mb_old_logp, mb_returns = t.gather(adv, b), t.gather(old_logp, b), t.gather(returns, b)
                with t.GradientTape() as tape:
                    logp, ent = net.log_prob_entropy(mb_obs, t.gather(cont, b), t.gather(disc, b), t.gather(masks, b))
                    values = critic.value(mb_obs, mb_mates)
                    baselines = critic.baseline(mb_obs, mb_mates, t.gather(m_act, b))
                    policy_loss = loss.clipped_surrogate_loss(logp, mb_old_logp, mb_adv, epsilon)
                    value_loss = loss.mean_value_loss(values, mb_returns, heads)
                    baseline_loss = loss.mean_value_loss(baselines, mb_returns, heads)
                    entropy = t.reduce_mean(ent)
                    total = policy_loss + 0.5 * (value_loss + BASELINE_WEIGHT * baseline_loss) - beta * entropy
                losses = [policy_loss, value_loss, entropy]
                return apply_update(
                    tape, total, variables, optimizer, losses, logp, mb_old_logp, epsilon, (baseline_loss,)
                )

            return sum_over_range(n_mb, minibatch, 7) / t.cast(t.maximum(n_mb, 1), f32)

        self._value_fn = value_fn.get_concrete_function()
        self._baseline_fn = baseline_fn.get_concrete_function()
        self._value_sequences_fn = None
        rows = minibatch_rows(int(self.hyperparameters.batch_size), self.sequence_length)
        self._train_fn = PerWidth(train_fn, signature, minibatch_width, rows)

    # ----- thread side ----------------------------------------------------------------------------

    def _group_arrays(self, trajs: list[Trajectory]) -> tuple[F32, F32, F32]:
        """Groupmates' observations ``[n, M, obs]`` and flat actions ``[n, M, A]`` at each step, and after
        each trajectory ``[k, M, obs]``; NaN rows where a groupmate is absent (``M`` ≥ 1)."""
        assert self.net is not None and self.critic is not None
        spec = self.net.spec
        width = spec.observation_size
        most = max([1, *(t.group.max_mates for t in trajs if t.group is not None)])
        n = sum(len(t) for t in trajs)
        mates_obs = np.full((n, most, width), np.nan, np.float32)
        mates_actions = np.zeros((n, most, self.critic.action_size), np.float32)
        next_mates = np.full((len(trajs), most, width), np.nan, np.float32)
        row = 0
        for i, traj in enumerate(trajs):
            group, length = traj.group, len(traj)
            if group is not None and group.max_mates:
                m = group.max_mates
                mates_obs[row : row + length, :m] = group.mates_obs
                mates_actions[row : row + length, :m] = flat_actions(
                    group.mates_continuous, group.mates_discrete, spec.action_spec
                )
                next_mates[i, :m] = group.next_mates_obs
            row += length
        if self.normalizer is not None:  # NaN rows stay NaN
            mates_obs = self.normalizer.apply(mates_obs.reshape(-1, width)).reshape(mates_obs.shape)
            next_mates = self.normalizer.apply(next_mates.reshape(-1, width)).reshape(next_mates.shape)
        return mates_obs.astype(np.float32), mates_actions, next_mates.astype(np.float32)

    def _values(self, trajs: list[Trajectory], obs: F32) -> tuple[F32, F32, F32 | None]:
        """``V`` of each step and of each bootstrap over the whole group; the baselines are kept for
        :meth:`_advantages` and the update."""
        assert self.critic is not None
        mates_obs, mates_actions, next_mates = self._group_arrays(trajs)
        next_obs = np.stack([t.next_obs for t in trajs])
        if self.normalizer is not None:
            next_obs = self.normalizer.apply(next_obs)
        present = 1 + np.concatenate([~np.isnan(mates_obs[:, :, 0]), ~np.isnan(next_mates[:, :, 0])]).sum(axis=1)
        most = max(float(self.critic.max_agents.numpy()), float(present.max()))
        self.critic.max_agents.assign(most)
        n = obs.shape[0]
        values = self._value_fn(
            np.concatenate([obs, next_obs]).astype(np.float32), np.concatenate([mates_obs, next_mates])
        ).numpy()
        baselines = self._baseline_fn(obs, mates_obs, mates_actions).numpy()
        self._group_batch = _GroupBatch(mates_obs, mates_actions, baselines)
        return values[:n], values[n:], None

    def _advantages(self, trajs: list[Trajectory], values: F32, bootstrap: F32, rewards: list[F32]) -> tuple[F32, F32]:
        """The mean counterfactual advantage over the heads ``[n]`` and the λ-returns ``[n, K]``.

        A trajectory is done (no bootstrap) when its agent's episode terminated and its whole group's
        had ended too; an agent that ended early bootstraps from its group.
        """
        assert self._group_batch is not None
        lengths = np.array([len(t) for t in trajs], np.int64)
        done = np.array([t.terminated and (t.group is None or t.group.all_done) for t in trajs], bool)
        advantages, returns = [], []
        for k, (stream, reward) in enumerate(zip(self._heads(), rewards, strict=True)):
            adv, ret = counterfactual_advantages(
                reward,
                values[:, k],
                self._group_batch.baselines[:, k],
                bootstrap[:, k],
                lengths,
                np.zeros_like(done) if stream.ignore_done else done,
                stream.gamma,
                self.hyperparameters.lambd,
            )
            advantages.append(adv)
            returns.append(ret)
        return np.mean(advantages, axis=0).astype(np.float32), np.stack(returns, axis=1).astype(np.float32)

    def _critic_inputs(self) -> tuple[Any, ...]:
        assert self._group_batch is not None
        return self._group_batch.mates_obs, self._group_batch.mates_actions

    def _critic_stats(self, out: F32) -> dict[str, float]:
        assert self._group_batch is not None
        baselines, self._group_batch = self._group_batch.baselines, None
        stats = {"Losses/Baseline Loss": float(out[6])}
        for k, stream in enumerate(self._heads()):
            stats[f"Policy/{stream.stat_name} Baseline Estimate"] = float(baselines[:, k].mean())
        return stats

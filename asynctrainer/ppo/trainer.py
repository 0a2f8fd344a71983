"""PPO on the asyncio runtime: trajectories in on the loop, updates in the worker thread."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from asynctrainer.demos.reader import load_demonstration
from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.imitation.bc import BehavioralCloning
from asynctrainer.nn.graph_loops import PerWidth, minibatch_rows, sum_over_range
from asynctrainer.nn.networks import ActorCritic
from asynctrainer.nn.normalizer import Normalizer
from asynctrainer.nn.optim import adam_step
from asynctrainer.nn.state import LearnedState
from asynctrainer.nn.tf_setup import keras as tf_keras
from asynctrainer.nn.tf_setup import tf
from asynctrainer.ppo import loss
from asynctrainer.ppo.gae import gae_segments
from asynctrainer.ppo.sequences import sequence_layout, sequence_minibatches
from asynctrainer.rewards.factory import create_reward_signals
from asynctrainer.rewards.signals import RewardSignal, RewardStream, SignalBatch, reward_streams, signal_state
from asynctrainer.runtime.schedules import decayed_value
from asynctrainer.runtime.scheduling import idle_while_computing
from asynctrainer.runtime.snapshot import PolicySnapshot
from asynctrainer.runtime.trainer import RLTrainer
from asynctrainer.runtime.trajectory import Trajectory

__all__ = ["PPOTrainer", "apply_update", "minibatch_width"]

F32 = npt.NDArray[np.float32]
#: Global gradient-norm clip (SB3's and CleanRL's default).
MAX_GRAD_NORM = 0.5


def apply_update(
    tape: Any,
    total: Any,
    variables: list[Any],
    optimizer: Any,
    losses: list[Any],
    log_prob: Any,
    behavior_log_prob: Any,
    epsilon: Any,
    extra: tuple[Any, ...] = (),
) -> Any:
    """One Adam step on ``total`` with the gradient clipped to :data:`MAX_GRAD_NORM` (inside a traced
    minibatch); returns its statistics ``[policy, value, entropy, approx KL, clip fraction,
    non-finite, *extra]`` (``losses`` gives the first three; non-finite > 0 when the loss or the
    gradient was NaN or infinite)."""
    t = tf()
    grads = tape.gradient(total, variables)
    grads, norm = t.clip_by_global_norm(grads, MAX_GRAD_NORM)
    adam_step(optimizer, grads, variables)
    return t.stack(
        [
            *losses,
            loss.approx_kl(log_prob, behavior_log_prob),
            loss.clip_fraction(log_prob, behavior_log_prob, epsilon),
            1.0 - t.cast(t.math.is_finite(total + norm), t.float32),
            *extra,
        ]
    )


def minibatch_width(inputs: tuple[Any, ...]) -> int:
    """The minibatch width of a PPO update's inputs (its index matrix, the 8th, is ``[minibatches, width]``)."""
    return int(inputs[7].shape[1])


class PPOTrainer(RLTrainer[ActorCritic]):
    """Proximal Policy Optimisation with ML-Agents' settings (``trainer_type: ppo``).

    Each reward signal (``extrinsic``, ``curiosity``, ``rnd``) has a value head of its own and its
    own GAE with its ``gamma``; the policy follows the mean of their advantages, normalised over
    the buffer, and the value loss is the mean over the heads, as in ML-Agents.

    With ``network_settings.memory`` the actor and the critic each end in an LSTM. The buffer is
    cut into sequences (:mod:`asynctrainer.ppo.sequences`); the actor's sequences start from the
    memories it acted with, the critic's from its own memory carried along each agent's
    trajectories (computed before the update, without gradient, as ML-Agents does), and padded
    steps are left out of every loss.
    """

    def __init__(self, behavior_name: str, trainer_settings: Any, *, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(behavior_name, trainer_settings, **kwargs)
        self.hyperparameters = trainer_settings.hyperparameters
        self.seed = seed
        self._buffer: list[Trajectory] = []
        self._buffer_steps = 0
        self._rng = np.random.default_rng(seed)
        self.normalizer: Normalizer | None = None
        self.net: ActorCritic | None = None
        self._train_fn: Any = None
        self._value_fn: Any = None
        self._value_sequences_fn: Any = None
        self.optimizer: Any = None
        self.signals: list[RewardSignal] = []
        self.bc: BehavioralCloning | None = None
        #: Per learned signal, each agent's reward so far in its current episode (thread side).
        self._episode_sums: dict[str, dict[str, float]] = {}
        #: With memory: the critic's memory after each agent's last trajectory (until its episode ends).
        self._critic_memories: dict[str, F32] = {}
        memory = trainer_settings.network_settings.memory
        self.sequence_length = 0 if memory is None else int(memory.sequence_length)

    # ----- policy -------------------------------------------------------------------------------

    def create_policy(self, behavior_id: str, behavior_spec: BehaviorSpec) -> ActorCritic:
        keras = tf_keras()
        t = tf()
        t.random.set_seed(self.seed)
        ns = self.trainer_settings.network_settings
        self.signals = create_reward_signals(
            self.trainer_settings.reward_signals,
            behavior_spec,
            self.seed,
            behavior_name=self.behavior_name,
            rng=self._rng,
        )
        self._episode_sums = {s.key: {} for s in self.signals}
        net = ActorCritic(
            behavior_spec,
            hidden_units=ns.hidden_units,
            num_layers=ns.num_layers,
            seed=self.seed,
            shared_critic=bool(getattr(self.hyperparameters, "shared_critic", False)),  # POCA's has none
            value_heads=len(self._heads()) if self.critic_in_actor else 0,
            vis_encode_type=ns.vis_encode_type,
            memory_size=0 if ns.memory is None else ns.memory.memory_size,
            sequence_length=self.sequence_length or None,
            goal_conditioning=ns.goal_conditioning_type == "hyper",
        )
        self.net = net
        self._create_critic(behavior_spec)
        if ns.normalize:
            self.normalizer = Normalizer.for_spec(behavior_spec)
        self.optimizer = keras.optimizers.Adam(learning_rate=self.hyperparameters.learning_rate, epsilon=1e-5)
        self.optimizer.build(self._trainable_variables())
        self._compile(behavior_spec)
        bc = self.trainer_settings.behavioral_cloning
        if bc is not None:
            self.bc = BehavioralCloning(
                bc,
                load_demonstration(bc.demo_path),
                net,
                behavior_spec,
                behavior_name=self.behavior_name,
                learning_rate=self.hyperparameters.learning_rate,
                batch_size=self.hyperparameters.batch_size,
                rng=self._rng,
            )
        return net

    #: The value heads are the actor-critic's own; POCA's critic is a network of its own.
    critic_in_actor = True

    def _create_critic(self, spec: BehaviorSpec) -> None:
        """A critic beside ``self.net`` (none: the actor-critic has the value heads)."""

    def _trainable_variables(self) -> list[Any]:
        assert self.net is not None
        return list(self.net.trainable_variables)

    def _named_variables(self) -> dict[str, Any]:
        """The networks' variables by stable name, as checkpoints store them."""
        assert self.net is not None
        return dict(self.net.named_variables())

    def _compile(self, spec: BehaviorSpec) -> None:
        t = tf()
        net = self.net
        assert net is not None
        optimizer = self.optimizer
        variables = self._trainable_variables()
        a = spec.action_spec
        f32 = t.float32
        heads = len(self._heads())
        m = net.memory_size
        seq = self.sequence_length

        # autograph=False: tracing converts no Python source (nn/graph_loops.py).
        @t.function(input_signature=[t.TensorSpec([None, spec.observation_size], f32)], autograph=False)
        def value_fn(obs: Any) -> Any:
            return net.value(obs)

        @t.function(
            input_signature=[t.TensorSpec([None, spec.observation_size], f32), t.TensorSpec([None, m], f32)],
            autograph=False,
        )
        def value_sequences_fn(obs: Any, memory: Any) -> Any:
            return net.value_sequences(obs, memory)

        def signature(width: int) -> list[Any]:
            return [
                t.TensorSpec([None, spec.observation_size], f32),  # obs
                t.TensorSpec([None, a.continuous_size], f32),  # continuous (raw)
                t.TensorSpec([None, a.discrete_size], t.int32),  # discrete
                t.TensorSpec([None, a.mask_size], f32),  # masks, 1 = allowed
                t.TensorSpec([None], f32),  # behavior log-probs
                t.TensorSpec([None], f32),  # advantages
                t.TensorSpec([None, None], f32),  # returns, one column per value head
                t.TensorSpec([None, width], t.int32),  # minibatch indices [n_minibatches, width]
                t.TensorSpec([], f32),  # beta
                t.TensorSpec([], f32),  # epsilon
                t.TensorSpec([], f32),  # learning rate
                t.TensorSpec([None], f32),  # 1 = a real step, 0 = a sequence's padding (memory only)
                t.TensorSpec([None, m], f32),  # the actor's memory before each step (memory only)
                t.TensorSpec([None, m], f32),  # the critic's memory before each step (memory only)
            ]

        @t.function(autograph=False)
        def train_fn(obs, cont, disc, masks, old_logp, adv, returns, idx, beta, epsilon, lr, valid, a_mem, c_mem):  # type: ignore[no-untyped-def]
            optimizer.learning_rate = lr  # assigned in the graph: no Python-side variable write
            n_mb = t.shape(idx)[0]

            def minibatch(i: Any) -> Any:
                b = idx[i]
                mb_adv = t.gather(adv, b)
                mb_old_logp = t.gather(old_logp, b)
                mb_returns = t.gather(returns, b)
                actor_memory = critic_memory = None
                if m:  # whole sequences: each starts from its stored memory
                    starts = b[::seq]
                    actor_memory, critic_memory = t.gather(a_mem, starts), t.gather(c_mem, starts)
                with t.GradientTape() as tape:
                    logp, ent = net.log_prob_entropy(
                        t.gather(obs, b), t.gather(cont, b), t.gather(disc, b), t.gather(masks, b), actor_memory
                    )
                    values = net.value(t.gather(obs, b), critic_memory)
                    if m:  # padding enters no loss
                        real = t.gather(valid, b) > 0.5
                        logp, ent, values = (
                            t.boolean_mask(logp, real),
                            t.boolean_mask(ent, real),
                            t.boolean_mask(values, real),
                        )
                        mb_old_logp, mb_adv = t.boolean_mask(mb_old_logp, real), t.boolean_mask(mb_adv, real)
                        mb_returns = t.boolean_mask(mb_returns, real)
                    policy_loss = loss.clipped_surrogate_loss(logp, mb_old_logp, mb_adv, epsilon)
                    value_loss = loss.mean_value_loss(values, mb_returns, heads)
                    entropy = t.reduce_mean(ent)
                    total = policy_loss + 0.5 * value_loss - beta * entropy
                return apply_update(
                    tape, total, variables, optimizer, [policy_loss, value_loss, entropy], logp, mb_old_logp, epsilon
                )

            return sum_over_range(n_mb, minibatch, 6) / t.cast(t.maximum(n_mb, 1), f32)

        # Concrete functions: calling them skips tf.function's dispatch, which the update thread
        # would otherwise run in Python, holding the GIL the event loop needs.
        self._value_fn = value_fn.get_concrete_function()
        self._value_sequences_fn = value_sequences_fn.get_concrete_function() if m else None
        rows = minibatch_rows(int(self.hyperparameters.batch_size), self.sequence_length)
        self._train_fn = PerWidth(train_fn, signature, minibatch_width, rows)

    def _make_snapshot(self, version: int) -> PolicySnapshot:
        assert self.net is not None
        mean = std = None
        if self.normalizer is not None:
            mean, std = self.normalizer.mean.astype(np.float32), self.normalizer.std
        return self.net.snapshot(self.behavior_name, version, self._step, mean, std)

    # ----- checkpoint state (thread side) -------------------------------------------------------

    def _learned(self) -> LearnedState:
        assert self.net is not None
        weights, optimizers, variables, normalizers = signal_state(self.signals)
        optimizers[""] = self.optimizer
        if self.bc is not None:
            optimizers["bc"] = self.bc.optimizer
        return LearnedState(
            self.behavior_name,
            {**self._named_variables(), **weights},
            optimizers,
            self.normalizer,
            self._rng,
            variables,
            normalizers,
        )

    def _algorithm_state(self) -> dict[str, np.ndarray]:
        return self._learned().save()

    def _restore_algorithm_state(self, state: Mapping[str, np.ndarray], *, weights_only: bool) -> None:
        self._learned().restore(state, weights_only=weights_only)

    # ----- loop side ----------------------------------------------------------------------------

    def _store_trajectory(self, trajectory: Trajectory) -> None:
        self._buffer.append(trajectory)
        self._buffer_steps += len(trajectory)

    def _is_ready_update(self) -> bool:
        return self._buffer_steps >= self.hyperparameters.buffer_size

    @property
    def update_threshold(self) -> int:
        return int(self.hyperparameters.buffer_size)

    def _take_buffer(self) -> list[Trajectory]:
        trajs, self._buffer, self._buffer_steps = self._buffer, [], 0
        return trajs

    # ----- thread side --------------------------------------------------------------------------

    def _heads(self) -> list[RewardStream]:
        """One value head per reward stream: extrinsic (if configured), then the learned signals."""
        return reward_streams(self.trainer_settings.reward_signals)

    def _signal_rewards(self, trajs: list[Trajectory], obs: F32) -> tuple[list[F32], dict[str, float]]:
        """Each head's rewards over the buffer (strength applied), and the learned signals' episode rewards."""
        rewards: list[F32] = []
        extrinsic = self.trainer_settings.reward_signals.get("extrinsic")
        if extrinsic is not None:
            rewards.append(np.concatenate([t.extrinsic_rewards for t in trajs]) * np.float32(extrinsic.strength))
        stats: dict[str, float] = {}
        if not self.signals:
            return rewards, stats
        batch = self._signal_batch(trajs, obs)
        lengths = np.cumsum([len(t) for t in trajs])[:-1]
        for signal in self.signals:
            reward = signal.evaluate(batch)
            rewards.append(reward)
            sums, finished = self._episode_sums[signal.key], []
            for traj, part in zip(trajs, np.split(reward, lengths), strict=True):
                total = sums.pop(traj.agent_id, 0.0) + float(part.sum())
                if traj.episode_return is not None:
                    finished.append(total)
                else:
                    sums[traj.agent_id] = total
            if finished:
                stats[f"Policy/{signal.stat_name} Reward"] = float(np.mean(finished))
        return rewards, stats

    def _signal_batch(self, trajs: list[Trajectory], obs: F32) -> SignalBatch:
        """The buffer's transitions for the learned signals (unnormalised observations)."""
        assert self.net is not None
        next_obs = np.concatenate([np.concatenate([t.obs[1:], t.next_obs[None]]) for t in trajs])
        done = np.zeros(obs.shape[0], bool)
        done[np.cumsum([len(t) for t in trajs])[[t.terminated for t in trajs]] - 1] = True
        return SignalBatch.create(
            obs,
            next_obs.astype(np.float32),
            np.concatenate([t.actions_continuous for t in trajs]),
            np.concatenate([t.actions_discrete for t in trajs]),
            self.net.spec.action_spec,
            done,
        )

    def _values(self, trajs: list[Trajectory], obs: F32) -> tuple[F32, F32, F32 | None]:
        """The critic's values ``[n, K]``, each trajectory's bootstrap ``[len(trajs), K]`` and, with memory,
        its memory before each step ``[n, memory_size]``."""
        next_obs = np.stack([t.next_obs for t in trajs])
        if self.normalizer is not None:
            next_obs = self.normalizer.apply(next_obs)
        if self._value_sequences_fn is None:
            all_values = self._value_fn(np.concatenate([obs, next_obs])).numpy()
            n = obs.shape[0]
            return all_values[:n], all_values[n:], None
        return self._recurrent_values(trajs, obs, next_obs)

    def _recurrent_values(self, trajs: list[Trajectory], obs: F32, next_obs: F32) -> tuple[F32, F32, F32]:
        """The recurrent critic along each agent's trajectories, from the memory its last one left.

        An agent's trajectories in one buffer run in turn (the k-th of every agent together); each
        runs as one sequence of its steps and then its next observation (the bootstrap).
        """
        assert self.net is not None and self._value_sequences_fn is not None
        m, heads = self.net.memory_size, len(self._heads())
        starts = np.concatenate([[0], np.cumsum([len(t) for t in trajs])])
        values = np.zeros((obs.shape[0], heads), np.float32)
        memories = np.zeros((obs.shape[0], m), np.float32)
        bootstrap = np.zeros((len(trajs), heads), np.float32)
        rounds: list[list[int]] = []
        seen: dict[str, int] = {}
        for i, traj in enumerate(trajs):
            k = seen[traj.agent_id] = seen.get(traj.agent_id, -1) + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(i)
        for members in rounds:
            width = max(len(trajs[i]) for i in members) + 1
            rows = np.empty((len(members), width, obs.shape[1]), np.float32)
            initial = np.zeros((len(members), m), np.float32)
            for j, i in enumerate(members):
                length = len(trajs[i])
                rows[j, :length] = obs[starts[i] : starts[i + 1]]
                rows[j, length:] = next_obs[i]  # the bootstrap step, then repeats of it (ignored)
                initial[j] = self._critic_memories.get(trajs[i].agent_id, initial[j])
            out, after = self._value_sequences_fn(rows.reshape(-1, obs.shape[1]), initial)
            out = out.numpy().reshape(len(members), width, heads)
            after = after.numpy().reshape(len(members), width, m)
            for j, i in enumerate(members):
                traj, length = trajs[i], len(trajs[i])
                values[starts[i] : starts[i + 1]] = out[j, :length]
                bootstrap[i] = out[j, length]
                memories[starts[i] : starts[i + 1]] = np.concatenate([initial[j : j + 1], after[j, : length - 1]])
                if traj.done_reached:
                    self._critic_memories.pop(traj.agent_id, None)
                else:
                    self._critic_memories[traj.agent_id] = after[j, length - 1]
        return values, bootstrap, memories

    def _advantages(self, trajs: list[Trajectory], values: F32, bootstrap: F32, rewards: list[F32]) -> tuple[F32, F32]:
        """The mean advantage over the heads ``[n]`` and returns ``[n, K]``."""
        lengths = np.array([len(t) for t in trajs], np.int64)
        terminated = np.array([t.terminated for t in trajs], bool)
        advantages, returns = [], []
        for k, (stream, reward) in enumerate(zip(self._heads(), rewards, strict=True)):
            adv, ret = gae_segments(
                reward,
                values[:, k],
                bootstrap[:, k],
                lengths,
                np.zeros_like(terminated) if stream.ignore_done else terminated,
                stream.gamma,
                self.hyperparameters.lambd,
            )
            advantages.append(adv)
            returns.append(ret)
        mean_adv = np.mean(advantages, axis=0).astype(np.float32)
        return mean_adv, np.stack(returns, axis=1).astype(np.float32)

    def _critic_inputs(self) -> tuple[Any, ...]:
        """Inputs of the update beyond PPO's, from this update's :meth:`_values` (none for PPO)."""
        return ()

    def _critic_stats(self, out: F32) -> dict[str, float]:
        """Statistics of this update beyond PPO's, from the update's outputs ``out`` (none for PPO)."""
        return {}

    @staticmethod
    def _memories_of(trajectory: Trajectory, size: int) -> F32:
        """The actor's memory before each step (zeros for a trajectory recorded without memory)."""
        if trajectory.memories is not None and trajectory.memories.shape == (len(trajectory), size):
            return trajectory.memories
        return np.zeros((len(trajectory), size), np.float32)

    def _update_policy(self) -> dict[str, float]:
        hp = self.hyperparameters
        trajs = self._take_buffer()
        raw_obs = obs = np.concatenate([t.obs for t in trajs])
        rewards, signal_stats = self._signal_rewards(trajs, raw_obs)
        if self.normalizer is not None:
            self.normalizer.update(obs)
            obs = self.normalizer.apply(obs)
        values, bootstrap, critic_memories = self._values(trajs, obs)
        adv, ret = self._advantages(trajs, values, bootstrap, rewards)
        if not (np.isfinite(adv).all() and np.isfinite(ret).all()):  # e.g. a reward too large for float32
            raise self._non_finite_update()
        # ML-Agents normalises advantages over the whole buffer, once per update.
        norm_adv = ((adv - adv.mean()) / (adv.std() + 1e-10)).astype(np.float32)
        n = obs.shape[0]
        a = self.net.spec.action_spec if self.net else None
        assert a is not None
        masks = np.concatenate(
            [
                t.action_masks if t.action_masks is not None else np.ones((len(t), a.mask_size), np.float32)
                for t in trajs
            ]
        )
        batch = min(hp.batch_size, n)
        n_mb = n // batch
        idx = np.stack([self._rng.permutation(n)[: n_mb * batch].reshape(n_mb, batch) for _ in range(hp.num_epoch)])
        idx = idx.reshape(-1, batch)
        cont = np.concatenate([t.actions_continuous for t in trajs])
        disc = np.concatenate([t.actions_discrete for t in trajs])
        old_logp = np.concatenate([t.log_probs for t in trajs])
        m = self.net.memory_size if self.net else 0
        valid = np.ones(n, np.float32)
        actor_memories = critic_rows = np.zeros((n, m), np.float32)
        signal_minibatches = idx
        if m:  # whole sequences, padded; the learned signals keep the unpadded rows above
            assert critic_memories is not None
            seq = self.sequence_length
            source, valid = sequence_layout([len(t) for t in trajs], seq)
            actor_memories = np.concatenate([self._memories_of(t, m) for t in trajs])[source]
            critic_rows = critic_memories[source]
            obs, cont, disc, masks = obs[source], cont[source], disc[source], masks[source]
            old_logp, norm_adv, ret = old_logp[source], norm_adv[source], ret[source]
            idx = sequence_minibatches(len(source) // seq, seq, hp.batch_size, hp.num_epoch, self._rng)
        max_steps = self.get_max_steps
        lr = decayed_value(hp.learning_rate_schedule, hp.learning_rate, 1e-10, self._step, max_steps)
        beta = decayed_value(hp.beta_schedule or hp.learning_rate_schedule, hp.beta, 1e-5, self._step, max_steps)
        epsilon = decayed_value(
            hp.epsilon_schedule or hp.learning_rate_schedule, hp.epsilon, 0.1, self._step, max_steps
        )
        inputs = (
            obs,
            cont,
            disc,
            masks,
            old_logp,
            norm_adv,
            ret,
            idx.astype(np.int32),
            np.float32(beta),
            np.float32(epsilon),
            np.float32(lr),
            valid,
            actor_memories,
            critic_rows,
        )
        # The call releases the GIL for the whole update: TF's inline kernels may yield the core too.
        with idle_while_computing():
            out = self._train_fn(*inputs, *self._critic_inputs()).numpy()
        if not (out[5] == 0.0 and np.isfinite(out).all()):
            raise self._non_finite_update()
        if self.signals:  # trained on the same minibatches as the policy, after it
            signal_batch = self._signal_batch(trajs, raw_obs)
            for signal in self.signals:
                losses, finite = signal.update(signal_batch, signal_minibatches.astype(np.int32))
                if not finite:
                    raise self._non_finite_update()
                signal_stats.update(losses)
        if self.bc is not None:  # once per update, after the policy's epochs (ML-Agents' order)
            cloned, finite = self.bc.update(self._step, self.normalizer)
            if not finite:
                raise self._non_finite_update()
            signal_stats.update(cloned)
        for k, stream in enumerate(self._heads()):
            signal_stats[f"Policy/{stream.stat_name} Value Estimate"] = float(values[:, k].mean())
        signal_stats.update(self._critic_stats(out))
        return signal_stats | {
            "Losses/Policy Loss": float(abs(out[0])),
            "Losses/Value Loss": float(out[1]),
            "Policy/Entropy (update)": float(out[2]),
            "Policy/Approx KL": float(out[3]),
            "Policy/Clip Fraction": float(out[4]),
            "Policy/Learning Rate": lr,
            "Policy/Beta": beta,
            "Policy/Epsilon": epsilon,
        }

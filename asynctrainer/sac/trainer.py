"""Soft Actor-Critic on the asyncio runtime (``trainer_type: sac``).

Paper order (Haarnoja et al. 2018, arXiv:1812.05905; CleanRL's ``sac_continuous_action.py``):
trajectories become transitions in a replay buffer → once ``buffer_init_steps`` steps were
taken, every trainer step owes ``1 / steps_per_update`` gradient steps (ML-Agents' count) →
each gradient step fits twin Q critics to a soft TD target from the target critics, moves the
actor toward the soft value, tunes the temperatures toward ML-Agents' target entropies, and
moves the targets by ``tau`` → a new numpy snapshot (``tanh_squash=True``) is published.

Threads: ``_store_trajectory`` (loop) only queues converted transitions; the update thread
moves them into the buffer, so a checkpoint taken in the thread never races the loop.

Reward signals: the critics have one stream per signal (``extrinsic`` first, then the learned
ones), each with its own soft TD target, ``gamma`` and terminal rule; the value loss is the
mean over streams and the actor follows their mean. Learned signals score each sampled
minibatch and then learn on the same minibatches, once per gradient step: as ML-Agents with
``reward_signal_steps_per_update`` equal to ``steps_per_update``, its default.

Memory (``network_settings.memory``): the replay buffer holds whole sequences
(:mod:`asynctrainer.sac.replay_buffer`) and each gradient step trains on
``batch_size // sequence_length`` of them. The actor starts each sequence from the memory it
acted with and its next-state sequence from the memory after the first row; the Q networks
and their targets start every sequence from zeros, as ML-Agents' SAC critics do; rows padding
a sequence enter no loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from asynctrainer.demos.reader import load_demonstration
from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.errors import CheckpointLoadError
from asynctrainer.imitation.bc import BehavioralCloning
from asynctrainer.nn.graph_loops import PerWidth, minibatch_rows, sum_over_range
from asynctrainer.nn.normalizer import Normalizer
from asynctrainer.nn.optim import adam_step
from asynctrainer.nn.state import LearnedState
from asynctrainer.nn.tf_setup import keras as tf_keras
from asynctrainer.nn.tf_setup import tf
from asynctrainer.rewards.factory import create_reward_signals
from asynctrainer.rewards.signals import RewardSignal, SignalBatch, reward_streams, signal_state
from asynctrainer.runtime.schedules import decayed_value
from asynctrainer.runtime.scheduling import idle_while_computing
from asynctrainer.runtime.snapshot import PolicySnapshot
from asynctrainer.runtime.trainer import RLTrainer, checkpoint_int
from asynctrainer.runtime.trajectory import Trajectory
from asynctrainer.sac import loss
from asynctrainer.sac.networks import SACNetworks, squashed_gaussian_log_prob
from asynctrainer.sac.replay_buffer import FIELDS, ReplayBuffer, Transitions, transitions_from_trajectory

#: Replay fields a checkpoint of an earlier version may lack (filled in when it is restored).
NEWER_FIELDS = ("memories", "valid")

__all__ = ["MAX_GRADIENT_STEPS_PER_UPDATE", "SACTrainer"]

F32 = npt.NDArray[np.float32]

#: Gradient steps one update may run; what is still owed runs at the next update. Keeps an
#: update short, so cancellation and snapshot publication stay prompt. When the
#: experience added since the last update owes more (long trajectories, steps_per_update < 1),
#: an update runs that many instead, so the configured ratio holds and no backlog builds up.
MAX_GRADIENT_STEPS_PER_UPDATE = 64
#: ML-Agents' ``BUFFER_TRUNCATE_PERCENT``: an over-full buffer is cut to 80 % of buffer_size.
BUFFER_TRUNCATE_PERCENT = 0.8


class SACTrainer(RLTrainer[SACNetworks]):
    """Soft Actor-Critic with ML-Agents' settings and update schedule.

    :param seed: seeds the network initialisers and the trainer's numpy generator (minibatch
        indices and the reparameterisation noise), so updates are repeatable.
    """

    def __init__(self, behavior_name: str, trainer_settings: Any, *, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(behavior_name, trainer_settings, **kwargs)
        self.hyperparameters = trainer_settings.hyperparameters
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        #: ML-Agents starts counting at 1: ``(step − buffer_init_steps) / update_steps > steps_per_update``.
        self.update_steps = 1
        self._pending: list[Transitions] = []
        self._pending_steps = 0
        self.replay: ReplayBuffer | None = None
        self.normalizer: Normalizer | None = None
        self.nets: SACNetworks | None = None
        memory = trainer_settings.network_settings.memory
        #: With ``network_settings.memory``: the LSTMs' memory width and the training sequences' length.
        self.memory_size = 0 if memory is None else int(memory.memory_size)
        self.sequence_length = 0 if memory is None else int(memory.sequence_length)
        self.policy_optimizer: Any = None
        self.value_optimizer: Any = None
        self.entropy_optimizer: Any = None
        self._train_fn: Any = None
        self._log_prob_fn: Any = None
        self.bc: BehavioralCloning | None = None
        self.signals: list[RewardSignal] = []
        self.streams = reward_streams(trainer_settings.reward_signals)

    # ----- policy -------------------------------------------------------------------------------

    def create_policy(self, behavior_id: str, behavior_spec: BehaviorSpec) -> SACNetworks:
        keras = tf_keras()
        tf().random.set_seed(self.seed)
        ns = self.trainer_settings.network_settings
        hp = self.hyperparameters
        nets = SACNetworks(
            behavior_spec,
            hidden_units=ns.hidden_units,
            num_layers=ns.num_layers,
            seed=self.seed,
            init_entcoef=hp.init_entcoef,
            streams=len(self.streams),
            vis_encode_type=ns.vis_encode_type,
            goal_conditioning=ns.goal_conditioning_type == "hyper",
            memory_size=self.memory_size,
            sequence_length=self.sequence_length or None,
        )
        self.signals = create_reward_signals(
            self.trainer_settings.reward_signals,
            behavior_spec,
            self.seed,
            behavior_name=self.behavior_name,
            rng=self._rng,
        )
        self.nets = nets
        a = behavior_spec.action_spec
        self.replay = ReplayBuffer(
            behavior_spec.observation_size,
            a.continuous_size,
            a.discrete_size,
            a.mask_size,
            self.memory_size,
            self.sequence_length,
        )
        if ns.normalize:
            self.normalizer = Normalizer.for_spec(behavior_spec)
        # ML-Agents: one Adam each for the policy, the critics and the temperatures, same lr.
        self.policy_optimizer = keras.optimizers.Adam(learning_rate=hp.learning_rate)
        self.value_optimizer = keras.optimizers.Adam(learning_rate=hp.learning_rate)
        self.entropy_optimizer = keras.optimizers.Adam(learning_rate=hp.learning_rate)
        self.policy_optimizer.build(nets.actor.variables)
        self.value_optimizer.build(nets.critic_variables)
        self.entropy_optimizer.build([nets.log_alpha])
        self._compile(behavior_spec)
        bc = self.trainer_settings.behavioral_cloning
        if bc is not None:
            self.bc = BehavioralCloning(
                bc,
                load_demonstration(bc.demo_path),
                nets.actor,
                behavior_spec,
                behavior_name=self.behavior_name,
                learning_rate=hp.learning_rate,
                batch_size=hp.batch_size,
                rng=self._rng,
            )
        return nets

    def _compile(self, spec: BehaviorSpec) -> None:
        t = tf()
        f32 = t.float32
        nets = self.nets
        assert nets is not None
        actor, q1, q2, q1_target, q2_target = nets.actor, nets.q1, nets.q2, nets.q1_target, nets.q2_target
        log_alpha = nets.log_alpha
        a = spec.action_spec
        branches = tuple(a.discrete_branches)
        entropy_target = t.constant(loss.target_entropy(a.continuous_size, branches))
        actor_vars = actor.variables
        critic_vars = nets.critic_variables
        pairs = list(zip(nets.target_variables, critic_vars, strict=True))
        policy_opt, value_opt, entropy_opt = self.policy_optimizer, self.value_optimizer, self.entropy_optimizer
        o_size, c_size, n_branches, m_size = spec.observation_size, a.continuous_size, a.discrete_size, a.mask_size
        # Per stream: 1 where a terminal stops its bootstrap (the env's reward, GAIL), 0 where it does not.
        stops = [0.0 if stream.ignore_done else 1.0 for stream in self.streams]
        k_streams = len(stops)

        recurrent = self.memory_size > 0

        def sample_policy(obs: Any, masks: Any, noise: Any, memory: Any = None) -> tuple[Any, Any, Any]:
            """Reparameterised continuous sample (squashed), log-prob terms ``[B, K]``, probs ``[B, M]``."""
            mean, log_std, branch_logp = actor.distribution(obs, masks, memory)
            terms = []
            squashed = t.zeros([t.shape(obs)[0], 0], f32)
            if mean is not None:
                u = mean + t.exp(log_std) * noise
                squashed = t.tanh(u)
                terms.append(squashed_gaussian_log_prob(u, mean, log_std))
            probs = [t.exp(lp) for lp in branch_logp]
            terms += [t.reduce_sum(p * lp, axis=1) for p, lp in zip(probs, branch_logp, strict=True)]
            all_probs = t.concat(probs, axis=1) if probs else t.zeros([t.shape(obs)[0], 0], f32)
            return squashed, t.stack(terms, axis=1), all_probs

        def batch_spec(width: int) -> list[Any]:
            return [
                t.TensorSpec([None, width, o_size], f32),  # obs [S, B, O] (normalised)
                t.TensorSpec([None, width, o_size], f32),  # next obs
                t.TensorSpec([None, width, c_size], f32),  # continuous actions: raw samples u
                t.TensorSpec([None, width, n_branches], t.int32),  # discrete actions
                t.TensorSpec([None, width, m_size], f32),  # masks, 1 = allowed
                t.TensorSpec([None, width, m_size], f32),  # next masks
                t.TensorSpec([None, width, None], f32),  # rewards [S, B, K], one per stream (strength applied)
                t.TensorSpec([None, width], f32),  # terminated (true terminals only)
                t.TensorSpec([None, width, c_size], f32),  # noise for the actor's sample at obs
                t.TensorSpec([None, width, c_size], f32),  # noise for the sample at next obs
                t.TensorSpec([None], f32),  # gamma per stream [K]
                t.TensorSpec([], f32),  # tau
                t.TensorSpec([], f32),  # learning rate (all three optimizers)
                t.TensorSpec([None, None, self.memory_size], f32),  # memory: the actor's at each sequence's start
                t.TensorSpec([None, width], f32),  # valid: 0 for a row padding a sequence
            ]

        # autograph=False, as in PPO (nn/graph_loops.py).
        @t.function(autograph=False)
        def train_fn(  # type: ignore[no-untyped-def]
            obs,
            next_obs,
            cont,
            disc,
            masks,
            next_masks,
            rewards,
            terminated,
            noise,
            next_noise,
            gamma,
            tau,
            lr,
            memory,
            valid,
        ):
            for opt in (value_opt, policy_opt, entropy_opt):
                opt.learning_rate = lr  # assigned in the graph: no Python-side variable writes
            n_steps = t.shape(obs)[0]

            def step(i: Any) -> Any:
                o, o_next = obs[i], next_obs[i]
                alpha = t.exp(t.convert_to_tensor(log_alpha))
                # With memory the rows are whole sequences: padding rows enter no loss; the actor starts
                # each sequence from its recorded memory, and its next-state sequence from the memory
                # after the first row; the critics start from zeros (module docstring).
                if recurrent:
                    keep = valid[i] > 0.0

                    def real(x: Any) -> Any:
                        return t.boolean_mask(x, keep)

                    m_now = memory[i]
                    m_next = actor.after_first_step(o, m_now)
                else:

                    def real(x: Any) -> Any:
                        return x

                    m_now = m_next = None
                # Soft TD target from the target critics and the current policy at s'.
                a_next, terms_next, probs_next = sample_policy(o_next, next_masks[i], next_noise[i], m_next)
                q_next = t.minimum(q1_target(o_next, a_next), q2_target(o_next, a_next))
                targets = []
                for k in range(k_streams):  # one soft TD target per reward stream, as ML-Agents
                    q_next_k = q1.stream(q_next, k)
                    v_next = loss.soft_value(
                        loss.expected_branch_value(probs_next, q_next_k, branches), terms_next, alpha
                    )
                    y_k = loss.td_target(rewards[i][:, k], terminated[i] * stops[k], v_next, gamma[k])
                    targets.append(t.stop_gradient(y_k))
                # Twin critics on the stored actions (the env saw tanh(u)); the loss is the mean over streams.
                taken = t.tanh(cont[i])
                with t.GradientTape() as tape:
                    q1_out, q2_out = q1(o, taken), q2(o, taken)
                    q1_taken = [
                        loss.taken_branch_value(q1.stream(q1_out, k), disc[i], branches) for k in range(k_streams)
                    ]
                    q2_taken = [
                        loss.taken_branch_value(q2.stream(q2_out, k), disc[i], branches) for k in range(k_streams)
                    ]
                    q1_loss = (
                        t.add_n([loss.q_loss(real(q), real(y)) for q, y in zip(q1_taken, targets, strict=True)])
                        / k_streams
                    )
                    q2_loss = (
                        t.add_n([loss.q_loss(real(q), real(y)) for q, y in zip(q2_taken, targets, strict=True)])
                        / k_streams
                    )
                    value_loss = q1_loss + q2_loss
                value_grads = tape.gradient(value_loss, critic_vars)
                adam_step(value_opt, value_grads, critic_vars)
                # Actor toward the soft value of the (just updated) critics' minimum.
                with t.GradientTape() as tape:
                    a_pi, terms, probs = sample_policy(o, masks[i], noise[i], m_now)
                    q_min = t.minimum(q1(o, a_pi), q2(o, a_pi))
                    q_pi = t.add_n([q1.stream(q_min, k) for k in range(k_streams)]) / k_streams  # mean over streams
                    expected = loss.expected_branch_value(probs, q_pi, branches)
                    terms = real(terms)
                    pi_loss = loss.policy_loss(real(expected), terms, alpha)
                policy_grads = tape.gradient(pi_loss, actor_vars)
                adam_step(policy_opt, policy_grads, actor_vars)
                # Temperatures toward the target entropies.
                with t.GradientTape() as tape:
                    ent_loss = loss.entropy_coef_loss(log_alpha, t.stop_gradient(terms), entropy_target)
                entropy_grads = tape.gradient(ent_loss, [log_alpha])
                adam_step(entropy_opt, entropy_grads, [log_alpha])
                # Polyak averaging of the targets.
                for target, source in pairs:
                    target.assign(tau * source + (1.0 - tau) * target)
                norms = [t.linalg.global_norm(g) for g in (value_grads, policy_grads, entropy_grads)]
                finite = t.math.is_finite(value_loss + pi_loss + ent_loss + t.add_n(norms))
                bad = 1.0 - t.cast(finite, f32)  # > 0: a NaN or inf loss or gradient
                estimates = [t.reduce_mean(real(q)) for q in q1_taken]
                return t.stack([pi_loss, value_loss, q1_loss, q2_loss, ent_loss, bad, *estimates])

            sums = sum_over_range(n_steps, step, 6 + k_streams)
            return sums / t.cast(t.maximum(n_steps, 1), f32), t.exp(t.convert_to_tensor(log_alpha))

        @t.function(
            input_signature=[
                t.TensorSpec([None, o_size], f32),
                t.TensorSpec([None, c_size], f32),
                t.TensorSpec([None, n_branches], t.int32),
                t.TensorSpec([None, m_size], f32),
            ],
            autograph=False,
        )
        def log_prob_fn(obs, cont, disc, masks):  # type: ignore[no-untyped-def]
            return actor.log_prob(obs, cont, disc, masks)

        # A concrete function skips tf.function's Python-side dispatch on every update (GIL time).
        rows = minibatch_rows(int(self.hyperparameters.batch_size), self.sequence_length)
        self._train_fn = PerWidth(train_fn, batch_spec, lambda inputs: int(inputs[0].shape[1]), rows)
        self._log_prob_fn = log_prob_fn

    def log_prob(self, obs: F32, continuous: F32, discrete: npt.NDArray[np.int32], masks: F32 | None = None) -> F32:
        """The TF actor's log-probability of env actions ``(tanh(continuous), discrete)`` (thread side).

        ``obs`` is raw: it is normalised as the snapshot does. Equal to what the snapshot
        reported when it sampled ``continuous``; a test holds it.
        """
        assert self.nets is not None
        a = self.nets.spec.action_spec
        n = obs.shape[0]
        if masks is None:
            masks = np.ones((n, a.mask_size), np.float32)
        x = self.normalizer.apply(obs) if self.normalizer is not None else obs
        out: F32 = self._log_prob_fn(
            x.astype(np.float32), continuous.astype(np.float32), discrete.astype(np.int32), masks.astype(np.float32)
        ).numpy()
        return out

    def _make_snapshot(self, version: int) -> PolicySnapshot:
        assert self.nets is not None
        mean = std = None
        if self.normalizer is not None:
            mean, std = self.normalizer.mean.astype(np.float32), self.normalizer.std
        return self.nets.actor.snapshot(self.behavior_name, version, self._step, mean, std)

    # ----- loop side ----------------------------------------------------------------------------

    def _store_trajectory(self, trajectory: Trajectory) -> None:
        mask_size = self.nets.spec.action_spec.mask_size if self.nets is not None else 0
        transitions = transitions_from_trajectory(trajectory, mask_size, self.memory_size, self.sequence_length)
        self._pending.append(transitions)
        self._pending_steps += len(transitions.rewards)

    def _due_gradient_steps(self, limit: int) -> int:
        """Gradient steps owed now, at most ``limit``, by ML-Agents' rule:
        one more while ``(step − buffer_init_steps) / update_steps > steps_per_update``."""
        hp = self.hyperparameters
        done = self.update_steps
        n = 0
        while n < limit and (self._step - hp.buffer_init_steps) / (done + n) > hp.steps_per_update:
            n += 1
        return n

    def _is_ready_update(self) -> bool:
        """ML-Agents': a batch in the buffer and ``buffer_init_steps`` taken; here also a step owed."""
        hp = self.hyperparameters
        rows = (len(self.replay) if self.replay is not None else 0) + self._pending_steps
        return rows >= hp.batch_size and self._step >= hp.buffer_init_steps and self._due_gradient_steps(1) > 0

    @property
    def update_threshold(self) -> None:
        """None: SAC updates after every trajectory once warm, not after a fixed buffer."""
        return None

    @property
    def lag_bound(self) -> int:
        """SAC updates after every trajectory once learning starts: allow two trajectories (or
        two update intervals, when ``steps_per_update`` is longer) ahead."""
        interval = int(self.hyperparameters.steps_per_update) + 1
        return 2 * max(int(self.trainer_settings.time_horizon), interval)

    @property
    def warmup_steps(self) -> None:
        """Off-policy: acting is not held back before the first update (its replay buffer
        learns from the initial policy's experience as from any other; holding it back cost
        SAC with behavioral cloning its learning in tests/imitation)."""
        return None

    # ----- thread side --------------------------------------------------------------------------

    def _flush_pending(self) -> int:
        """Move queued transitions into the buffer and the observation normaliser (thread side).

        :return: how many transitions were moved.
        """
        assert self.replay is not None
        pending, self._pending, self._pending_steps = self._pending, [], 0
        for transitions in pending:
            if self.normalizer is not None:
                self.normalizer.update(transitions.obs[transitions.valid > 0])
            self.replay.add(transitions)
        return sum(len(t.rewards) for t in pending)

    def _normalize(self, x: F32) -> F32:
        if self.normalizer is None:
            return x
        shape = x.shape
        return self.normalizer.apply(x.reshape(-1, shape[-1])).reshape(shape)

    def _update_policy(self) -> dict[str, float]:
        hp = self.hyperparameters
        assert self.replay is not None and self.nets is not None
        added = self._flush_pending()
        limit = max(MAX_GRADIENT_STEPS_PER_UPDATE, math.ceil(added / hp.steps_per_update))
        n_steps = self._due_gradient_steps(limit)
        lr = decayed_value(hp.learning_rate_schedule, hp.learning_rate, 1e-10, self._step, self.get_max_steps)
        stats: dict[str, float] = {"Policy/Learning Rate": lr}
        if n_steps > 0 and len(self.replay) >= hp.batch_size:
            seq = self.sequence_length
            if seq:
                idx = self.replay.sample_sequences(self._rng, n_steps, hp.batch_size)
            else:
                idx = self.replay.sample_indices(self._rng, n_steps, hp.batch_size)
            batch = self.replay.gather(idx)
            rows = idx.shape[1]
            c = self.nets.spec.action_spec.continuous_size
            noise = self._rng.standard_normal((2, n_steps, rows, c), dtype=np.float32)
            starts = batch.memories[:, ::seq] if seq else np.zeros((n_steps, 0, 0), np.float32)
            rewards, signals_batch = self._stream_rewards(batch)
            inputs = (
                self._normalize(batch.obs),
                self._normalize(batch.next_obs),
                batch.actions_continuous,
                batch.actions_discrete,
                batch.masks,
                batch.next_masks,
                rewards,
                batch.terminated,
                noise[0],
                noise[1],
                np.array([stream.gamma for stream in self.streams], np.float32),
                np.float32(hp.tau),
                np.float32(lr),
                np.ascontiguousarray(starts),
                batch.valid,
            )
            # The call releases the GIL for the whole update: TF's inline kernels may yield the core too.
            with idle_while_computing():
                means, alpha = self._train_fn(*inputs)
            means, alpha = means.numpy(), alpha.numpy()
            if not (means[5] == 0.0 and np.isfinite(means).all() and np.isfinite(alpha).all()):
                raise self._non_finite_update()
            stats.update(
                {
                    "Losses/Policy Loss": float(means[0]),
                    "Losses/Value Loss": float(means[1]),
                    "Losses/Q1 Loss": float(means[2]),
                    "Losses/Q2 Loss": float(means[3]),
                    "Losses/Entropy Coeff Loss": float(means[4]),
                }
            )
            for k, stream in enumerate(self.streams):
                stats[f"Policy/{stream.stat_name} Value"] = float(means[6 + k])  # ML-Agents SAC's name
            if signals_batch is not None:  # the signals learn on the same minibatches
                steps = np.arange(n_steps * rows, dtype=np.int32).reshape(n_steps, rows)
                for signal in self.signals:
                    losses, finite = signal.update(signals_batch, steps)
                    if not finite:
                        raise self._non_finite_update()
                    stats.update(losses)
                    stats[f"Policy/{signal.stat_name} Reward"] = float(
                        rewards[:, :, self._stream_of(signal.key)][batch.valid > 0].mean()
                    )
            a = self.nets.spec.action_spec
            if a.is_continuous():
                stats["Policy/Continuous Entropy Coeff"] = float(alpha[0])
            if a.is_discrete():
                stats["Policy/Discrete Entropy Coeff"] = float(alpha[-a.discrete_size :].mean())
            if self.bc is not None:  # once per update, after its gradient steps
                cloned, finite = self.bc.update(self._step, self.normalizer)
                if not finite:
                    raise self._non_finite_update()
                stats.update(cloned)
        # ML-Agents counts owed steps whether or not a batch was there.
        self.update_steps += n_steps
        if len(self.replay) > hp.buffer_size:
            self.replay.truncate(int(hp.buffer_size * BUFFER_TRUNCATE_PERCENT))
        return stats

    def _stream_of(self, key: str) -> int:
        return next(k for k, stream in enumerate(self.streams) if stream.key == key)

    def _stream_rewards(self, batch: Any) -> tuple[F32, SignalBatch | None]:
        """Rewards ``[S, B, K]`` of the sampled minibatches, one column per stream (ML-Agents evaluates
        SAC's learned signals on each sampled minibatch), and the minibatches flattened for the signals."""
        assert self.nets is not None
        s_steps, size = batch.rewards.shape
        out = np.zeros((s_steps, size, len(self.streams)), np.float32)
        extrinsic = self.trainer_settings.reward_signals.get("extrinsic")
        if extrinsic is not None:
            out[:, :, self._stream_of("extrinsic")] = batch.rewards * np.float32(extrinsic.strength)
        if not self.signals:
            return out, None
        flat = SignalBatch.create(
            batch.obs.reshape(s_steps * size, -1),
            batch.next_obs.reshape(s_steps * size, -1),
            batch.actions_continuous.reshape(s_steps * size, -1),
            batch.actions_discrete.reshape(s_steps * size, -1),
            self.nets.spec.action_spec,
            batch.terminated.reshape(-1) > 0,
        )
        for signal in self.signals:
            out[:, :, self._stream_of(signal.key)] = signal.evaluate(flat).reshape(s_steps, size)
        return out, flat

    # ----- checkpoint state (thread side) -------------------------------------------------------

    def _learned(self) -> LearnedState:
        assert self.nets is not None
        weights, optimizers, variables, normalizers = signal_state(self.signals)
        optimizers |= {
            "policy": self.policy_optimizer,
            "value": self.value_optimizer,
            "entropy": self.entropy_optimizer,
        }
        if self.bc is not None:
            optimizers["bc"] = self.bc.optimizer
        return LearnedState(
            self.behavior_name,
            {**self.nets.named_variables(), **weights},
            optimizers,
            self.normalizer,
            self._rng,
            variables={"log_alpha": self.nets.log_alpha, **variables},
            normalizers=normalizers,
        )

    def _algorithm_state(self) -> dict[str, np.ndarray]:
        state = self._learned().save()
        state["update_steps"] = np.array([self.update_steps], np.int64)
        return state

    def _queued_on_loop(self) -> list[Transitions]:
        """The transitions queued for the update thread (a copy of the list, taken on the loop)."""
        return list(self._pending)

    def _queued_state(self, queued: object) -> dict[str, np.ndarray]:
        """With ``save_replay_buffer``: the buffer's rows, then the ``queued`` ones (worker thread)."""
        if not self.hyperparameters.save_replay_buffer:
            return {}
        assert self.replay is not None and isinstance(queued, list)
        state = {f"replay/{k}": v for k, v in self.replay.arrays(queued).items()}
        # The newest rows are still queued: restored to the queue, they reach the normaliser.
        state["replay_queued"] = np.array([sum(len(t.rewards) for t in queued)], np.int64)
        return state

    def _restore_algorithm_state(self, state: Mapping[str, np.ndarray], *, weights_only: bool) -> None:
        assert self.replay is not None
        if weights_only:
            self._learned().restore(state, weights_only=True)
            return
        update_steps = 1
        if "update_steps" in state:
            update_steps = checkpoint_int(state, "update_steps", self.behavior_name, low=1)
        replay: dict[str, np.ndarray] | None = None
        queued = 0
        if all(f"replay/{f}" in state for f in FIELDS if f not in NEWER_FIELDS):
            replay = {f: np.asarray(state[f"replay/{f}"]) for f in FIELDS if f"replay/{f}" in state}
            rows = replay["rewards"].shape[0] if replay["rewards"].ndim else 0
            # Saved before SAC had memory: every row a real step, no memories.
            replay.setdefault("memories", np.zeros((rows, self.memory_size), np.float32))
            replay.setdefault("valid", np.ones(rows, np.float32))
            for name, values in replay.items():
                if values.ndim == 0 or (values.dtype.kind == "f" and not np.isfinite(values).all()):
                    raise CheckpointLoadError(
                        f"Behavior '{self.behavior_name}': field 'replay/{name}' is a scalar or holds NaN or "
                        "infinite values; one row of finite numbers per transition is allowed."
                    )
            if "replay_queued" in state:
                queued = checkpoint_int(state, "replay_queued", self.behavior_name, high=replay["rewards"].shape[0])
        self._learned().restore(state, weights_only=False)
        self.update_steps = update_steps
        if replay is not None:
            total = replay["rewards"].shape[0]
            try:
                self.replay.load_arrays({f: a[: total - queued] for f, a in replay.items()})
            except ValueError as exc:
                raise CheckpointLoadError(f"Behavior '{self.behavior_name}': fields 'replay/*': {exc}.") from None
            self._pending = [Transitions(*(replay[f][total - queued :] for f in FIELDS))] if queued else []
            self._pending_steps = queued

"""SACTrainer: acting/learning parity, ML-Agents' update schedule, checkpoint state."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.runtime.trajectory import Trajectory
from asynctrainer.settings import run_settings_from_dict

SPECS = {
    "continuous": ActionSpec.create_continuous(2),
    "discrete": ActionSpec.create_discrete((3,)),
    "multi-discrete": ActionSpec.create_discrete((2, 3)),
    "hybrid": ActionSpec(2, (3, 2)),
}


def make_trainer(action_spec: ActionSpec, *, seed: int = 3, normalize: bool = True, **hyper: Any) -> Any:
    from asynctrainer.sac.trainer import SACTrainer

    hp = {"batch_size": 8, "buffer_size": 64, "buffer_init_steps": 0, "learning_rate": 1e-2, **hyper}
    settings = run_settings_from_dict(
        {
            "behaviors": {
                "b": {
                    "trainer_type": "sac",
                    "hyperparameters": hp,
                    "network_settings": {"hidden_units": 8, "num_layers": 2, "normalize": normalize},
                    "max_steps": 10_000,
                }
            }
        }
    )
    trainer = SACTrainer("b", settings.trainer_settings_for("b"), seed=seed)
    spec = BehaviorSpec((ObservationSpec((3,)), ObservationSpec((2,))), action_spec)
    trainer.add_policy("b", trainer.create_policy("b", spec))
    return trainer


def random_trajectory(spec: ActionSpec, n: int, rng: np.random.Generator, *, terminated: bool = True) -> Trajectory:
    masks = np.ones((n, spec.mask_size), np.float32)
    if spec.is_discrete():
        masks[:, 0] = 0.0
    discrete = np.zeros((n, spec.discrete_size), np.int32)
    for b, size in enumerate(spec.discrete_branches):
        discrete[:, b] = rng.integers(1 if b == 0 else 0, size, n)  # branch 0's action 0 is masked
    return Trajectory(
        behavior_name="b",
        agent_id="0",
        obs=(rng.normal(size=(n, 5)) * 3 + 1).astype(np.float32),
        next_obs=rng.normal(size=5).astype(np.float32),
        actions_continuous=rng.normal(size=(n, spec.continuous_size)).astype(np.float32),
        actions_discrete=discrete,
        log_probs=np.zeros(n, np.float32),
        entropies=np.zeros(n, np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        action_masks=masks if spec.is_discrete() else None,
        policy_versions=np.zeros(n, np.int64),
        terminated=terminated,
        episode_return=0.0 if terminated else None,
        episode_length=n if terminated else None,
    )


def feed(trainer: Any, n: int, seed: int = 0) -> None:
    """Hand trajectories to the trainer as the loop would, and run its due updates."""
    rng = np.random.default_rng(seed)
    spec = trainer.nets.spec.action_spec
    for _ in range(n):
        if trainer._accept(random_trajectory(spec, 16, rng)):
            trainer._update_policy()


def all_weights(trainer: Any) -> dict[str, np.ndarray]:
    return {k: v for k, v in trainer.get_state().items() if k.startswith("algo/weights/")}


def test_create_trainer_builds_sac_for_trainer_type_sac() -> None:
    from asynctrainer.app import create_trainer
    from asynctrainer.runtime.contracts import TrainerContext
    from asynctrainer.runtime.stats import StatsReporter
    from asynctrainer.sac.trainer import SACTrainer

    settings = run_settings_from_dict({"behaviors": {"b": {"trainer_type": "sac"}}})
    spec = BehaviorSpec((ObservationSpec((1,)),), ActionSpec.create_continuous(1))
    context = TrainerContext(seed=1, artifact_path=None, training=True, stats_reporter=StatsReporter("b"))
    trainer = create_trainer("b", settings.trainer_settings_for("b"), spec, context)
    assert isinstance(trainer, SACTrainer)
    assert trainer.update_threshold is None


@pytest.mark.parametrize("kind", list(SPECS))
def test_tensorflow_log_prob_equals_the_tanh_squashed_snapshot(kind: str) -> None:
    spec = SPECS[kind]
    trainer = make_trainer(spec)
    feed(trainer, 4)  # move the weights, log-std and normaliser away from their initial values
    snapshot = trainer._make_snapshot(1)
    assert snapshot.tanh_squash
    rng = np.random.default_rng(7)
    obs = (rng.normal(size=(256, 5)) * 3 + 1).astype(np.float32)
    mask = np.ones((256, spec.mask_size), np.float32)
    if spec.is_discrete():
        mask[:128, 0] = 0.0
        mask[128:, 1] = 0.0
    for deterministic in (False, True):
        out = snapshot.act(obs, mask if spec.is_discrete() else None, deterministic=deterministic, rng=rng)
        if spec.is_continuous():
            np.testing.assert_allclose(out.continuous, np.tanh(out.continuous_raw), rtol=1e-6)
        logp = trainer.log_prob(obs, out.continuous_raw, out.discrete, mask if spec.is_discrete() else None)
        np.testing.assert_allclose(logp, out.log_prob, rtol=1e-4, atol=1e-4)
        if spec.is_discrete():
            assert (out.discrete[:128, 0] != 0).all() and (out.discrete[128:, 0] != 1).all()


def test_squashed_log_prob_on_hand_computed_values() -> None:
    from asynctrainer.sac.networks import squashed_gaussian_log_prob

    u = np.array([[0.5, -1.0]], np.float32)
    mean = np.array([[0.0, 0.0]], np.float32)
    log_std = np.array([0.0, np.log(2.0)], np.float32)
    expected = sum(
        -0.5 * (x / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi) - np.log(1 - np.tanh(x) ** 2 + 1e-6)
        for x, s in ((0.5, 1.0), (-1.0, 2.0))
    )
    got = squashed_gaussian_log_prob(u, mean, log_std).numpy()
    np.testing.assert_allclose(got, [expected], rtol=1e-5)


def test_update_schedule_follows_ml_agents_steps_per_update_rule() -> None:
    trainer = make_trainer(SPECS["continuous"], buffer_init_steps=10, steps_per_update=2.0)
    trainer._step = 10
    assert trainer._due_gradient_steps(1000) == 0
    trainer._step = 30
    # (30 - 10) / u > 2 holds for u = 1..9.
    assert trainer._due_gradient_steps(1000) == 9
    trainer.update_steps = 10
    assert trainer._due_gradient_steps(1000) == 0


def test_no_update_before_buffer_init_steps() -> None:
    trainer = make_trainer(SPECS["discrete"], buffer_init_steps=40)
    rng = np.random.default_rng(0)
    assert not trainer._accept(random_trajectory(SPECS["discrete"], 16, rng))
    assert not trainer._accept(random_trajectory(SPECS["discrete"], 16, rng))
    assert trainer._accept(random_trajectory(SPECS["discrete"], 16, rng))  # step 48 >= 40, 7 steps owed


def test_an_update_runs_what_new_experience_owes_even_past_the_cap() -> None:
    trainer = make_trainer(SPECS["hybrid"], buffer_size=10_000)
    rng = np.random.default_rng(0)
    for _ in range(10):
        trainer._process_trajectory(random_trajectory(SPECS["hybrid"], 16, rng))
    assert trainer._due_gradient_steps(10_000) == 159
    stats = trainer._update_policy()
    # 160 new transitions at steps_per_update 1: ML-Agents' ratio holds, no backlog is left.
    assert trainer.update_steps == 160
    assert trainer._due_gradient_steps(10_000) == 0
    assert len(trainer.replay) == 160
    for key in ("Losses/Policy Loss", "Losses/Q1 Loss", "Losses/Q2 Loss", "Policy/Continuous Entropy Coeff"):
        assert np.isfinite(stats[key]), key


def test_a_backlog_is_worked_off_at_most_the_cap_per_update() -> None:
    from asynctrainer.sac.trainer import MAX_GRADIENT_STEPS_PER_UPDATE

    trainer = make_trainer(SPECS["discrete"], buffer_size=10_000)
    trainer._process_trajectory(random_trajectory(SPECS["discrete"], 16, np.random.default_rng(0)))
    trainer._update_policy()
    assert trainer.update_steps == 16
    trainer._step += 200  # steps counted whose experience is already in the buffer (e.g. a resume)
    trainer._update_policy()
    assert trainer.update_steps == 16 + MAX_GRADIENT_STEPS_PER_UPDATE
    trainer._update_policy()
    assert trainer.update_steps == 16 + 2 * MAX_GRADIENT_STEPS_PER_UPDATE


def test_replay_buffer_is_truncated_to_eighty_percent_after_an_update() -> None:
    trainer = make_trainer(SPECS["continuous"], buffer_size=64)
    feed(trainer, 6)
    assert len(trainer.replay) <= 64
    assert len(trainer.replay) >= int(0.8 * 64)


def test_targets_move_toward_the_critics_by_tau() -> None:
    trainer = make_trainer(SPECS["multi-discrete"], tau=0.25)
    rng = np.random.default_rng(0)
    trainer._process_trajectory(random_trajectory(SPECS["multi-discrete"], 8, rng))
    trainer._step = 2  # (2 - 0) / 1 > 1: exactly one gradient step owed
    nets = trainer.nets
    before = [v.numpy().copy() for v in nets.target_variables]
    np.testing.assert_array_equal(before[0], nets.q1.variables[0].numpy())
    trainer._update_policy()
    assert trainer.update_steps == 2
    for old, target, critic in zip(before, nets.target_variables, nets.critic_variables, strict=True):
        np.testing.assert_allclose(target.numpy(), 0.25 * critic.numpy() + 0.75 * old, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["continuous", "hybrid"])
def test_state_round_trip_restores_everything_and_the_next_update_is_identical(kind: str) -> None:
    spec = SPECS[kind]
    a = make_trainer(spec, save_replay_buffer=True)
    feed(a, 5)
    # One trajectory queued but not yet in the buffer must be saved too.
    a._process_trajectory(random_trajectory(spec, 4, np.random.default_rng(9)))
    state = a.get_state()
    for key in ("algo/log_alpha", "algo/update_steps", "algo/rng", "algo/normalizer/mean", "algo/replay/obs"):
        assert key in state, key
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert state["algo/replay/obs"].shape[0] == len(a.replay) + 4
    assert any(k.startswith("algo/weights/q2_target") for k in state)
    assert any(k.startswith("algo/optimizer/entropy/") for k in state)

    b = make_trainer(spec, seed=99, save_replay_buffer=True)
    b.set_state(state)
    restored = b.get_state()
    assert restored.keys() == state.keys()
    for key in state:
        np.testing.assert_array_equal(restored[key], state[key], err_msg=key)
    assert b.step == a.step and b.update_steps == a.update_steps

    feed(a, 2, seed=5)
    feed(b, 2, seed=5)
    for key, value in all_weights(a).items():
        np.testing.assert_array_equal(all_weights(b)[key], value, err_msg=key)


def test_weights_only_restores_network_weights_and_nothing_else() -> None:
    spec = SPECS["hybrid"]
    a = make_trainer(spec, save_replay_buffer=True)
    feed(a, 5)
    state = a.get_state()
    b = make_trainer(spec, seed=99, save_replay_buffer=True)
    fresh_alpha = b.nets.log_alpha.numpy().copy()
    b.set_state(state, weights_only=True)
    for key, value in all_weights(a).items():
        np.testing.assert_array_equal(all_weights(b)[key], value, err_msg=key)
    assert b.step == 0 and b.update_steps == 1 and len(b.replay) == 0
    np.testing.assert_array_equal(b.nets.log_alpha.numpy(), fresh_alpha)
    assert int(b.policy_optimizer.iterations.numpy()) == 0


def test_replay_buffer_is_not_saved_unless_asked() -> None:
    trainer = make_trainer(SPECS["discrete"])
    feed(trainer, 3)
    assert not any(k.startswith("algo/replay/") for k in trainer.get_state())


def test_restoring_into_other_network_sizes_names_the_layer() -> None:
    from asynctrainer.errors import CheckpointLoadError
    from asynctrainer.sac.trainer import SACTrainer

    state = make_trainer(SPECS["discrete"]).get_state()
    settings = run_settings_from_dict(
        {"behaviors": {"b": {"trainer_type": "sac", "network_settings": {"hidden_units": 4, "num_layers": 2}}}}
    )
    other = SACTrainer("b", settings.trainer_settings_for("b"), seed=0)
    spec = BehaviorSpec((ObservationSpec((3,)), ObservationSpec((2,))), SPECS["discrete"])
    other.add_policy("b", other.create_policy("b", spec))
    with pytest.raises(CheckpointLoadError, match="actor_0/kernel"):
        other.set_state(state)


def test_a_non_finite_loss_fails_the_update_naming_behavior_and_step() -> None:
    from asynctrainer.errors import UpdateError

    spec = SPECS["continuous"]
    trainer = make_trainer(spec)
    rng = np.random.default_rng(0)
    bad = random_trajectory(spec, 16, rng)
    bad.rewards[:] = np.float32(np.inf)  # a reward too large for float32
    assert trainer._accept(bad)
    with pytest.raises(UpdateError, match="NaN or infinite") as info:
        trainer._update_policy()
    assert info.value.behavior_name == "b" and info.value.step == 16


async def test_a_checkpoint_keeps_the_step_and_queued_transitions_of_the_moment_it_began() -> None:
    import threading

    import anyio

    spec = SPECS["continuous"]
    trainer = make_trainer(spec, save_replay_buffer=True)
    feed(trainer, 3)
    rng = np.random.default_rng(4)
    trainer._process_trajectory(random_trajectory(spec, 4, rng))  # queued for the update thread
    step, rows = trainer.step, len(trainer.replay) + 4
    in_thread, release = threading.Event(), threading.Event()
    arrays = trainer.replay.arrays

    def slow_arrays(extra: Any = ()) -> dict[str, np.ndarray]:
        in_thread.set()
        assert release.wait(10)
        return arrays(extra)

    trainer.replay.arrays = slow_arrays
    captured: list[Any] = []

    async def capture() -> None:
        captured.append(await trainer.checkpoint_state())

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(capture)
            await anyio.to_thread.run_sync(in_thread.wait)
            trainer._process_trajectory(random_trajectory(spec, 5, rng))  # the loop goes on meanwhile
            release.set()
    [(state, snapshot)] = captured
    assert int(state["trainer/step"][0]) == step and snapshot.step == step
    assert state["algo/replay/obs"].shape[0] == rows and int(state["algo/replay_queued"][0]) == 4

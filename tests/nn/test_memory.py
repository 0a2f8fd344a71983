"""Memory (``network_settings.memory``): the LSTM in Keras, numpy and ONNX, per-agent memories, sequences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, DecisionSteps, ObservationSpec, TerminalSteps
from asynctrainer.errors import ExportError, SpecError
from asynctrainer.ppo.sequences import sequence_layout, sequence_minibatches
from asynctrainer.runtime.agent_processor import AgentProcessor
from asynctrainer.runtime.snapshot import PolicySnapshot
from asynctrainer.testing.simple_env import MemoryEnvironment

SPEC = BehaviorSpec((ObservationSpec((3,)), ObservationSpec((2,))), ActionSpec(2, (3, 2)))
M = 6


@pytest.fixture(scope="module")
def net() -> object:
    from asynctrainer.nn.networks import ActorCritic

    return ActorCritic(SPEC, hidden_units=8, num_layers=1, seed=4, memory_size=M)


def test_keras_sequences_and_the_snapshots_steps_agree(net: object) -> None:
    from asynctrainer.nn.networks import ActorCritic

    assert isinstance(net, ActorCritic)
    snap = net.snapshot("mem", 1, 0)
    assert snap.memory_size == M and snap.lstm is not None
    rng = np.random.default_rng(0)
    b, steps = 3, 5
    x = rng.normal(size=(b * steps, SPEC.observation_size)).astype(np.float32)
    start = rng.normal(size=(b, M)).astype(np.float32)
    mean, _, logits = net.actor_outputs(x, start)
    memory, means, logps = start, [], []
    for k in range(steps):
        rows = x.reshape(b, steps, -1)[:, k]
        step_mean, step_logp = snap.distribution_params(rows, None, memory)
        means.append(step_mean)
        logps.append(step_logp[0])
        memory = snap.act(rows, deterministic=True, rng=rng, memories=memory).memories
    np.testing.assert_allclose(np.stack(means, 1).reshape(b * steps, -1), mean.numpy(), atol=1e-5)
    tf_logits = logits.numpy()[:, :3]
    expected = tf_logits - np.log(np.exp(tf_logits).sum(1, keepdims=True))
    np.testing.assert_allclose(np.stack(logps, 1).reshape(b * steps, -1), expected, atol=1e-5)
    # Memory changes the decision: the same observation from another memory gives another mean.
    other = snap.distribution_params(x[:1], None, np.zeros((1, M), np.float32))[0]
    assert not np.allclose(other, snap.distribution_params(x[:1], None, np.ones((1, M), np.float32))[0])


def test_the_fused_kernels_gradient_is_the_step_by_step_gradient() -> None:
    from asynctrainer.nn.memory import LSTMLayer
    from asynctrainer.nn.tf_setup import tf

    t = tf()
    layer = LSTMLayer(5, 8, seed=0, name="probe")
    rng = np.random.default_rng(1)
    b, steps = 3, 7
    rows = t.constant(rng.normal(size=(b * steps, 5)).astype(np.float32))
    start = t.constant(rng.normal(size=(b, 8)).astype(np.float32))
    with t.GradientTape(persistent=True) as tape:
        tape.watch(rows)
        out, memories = layer.sequences(rows, start, steps)
        fused = t.reduce_sum(out * out) + t.reduce_sum(memories[:, 4:])
        x, memory, outs, kept = t.reshape(rows, [b, steps, 5]), start, [], []
        for k in range(steps):
            o, memory = layer.step(x[:, k], memory)
            outs.append(o)
            kept.append(memory)
        looped = t.reduce_sum(t.stack(outs) ** 2) + t.reduce_sum(t.stack(kept)[:, :, 4:])
    np.testing.assert_allclose(float(fused), float(looped), rtol=1e-5)
    for v in [*layer.variables, rows]:
        np.testing.assert_allclose(tape.gradient(fused, v).numpy(), tape.gradient(looped, v).numpy(), atol=1e-4)


def test_a_snapshot_with_memory_round_trips_its_payload(net: object, tmp_path: Path) -> None:
    from asynctrainer.nn.networks import ActorCritic

    assert isinstance(net, ActorCritic)
    snap = net.snapshot("mem", 2, 10)
    payload = snap.to_payload()
    assert payload["header"]["memory_size"] == M
    snap.save(tmp_path / "s.npz")
    loaded = PolicySnapshot.load(tmp_path / "s.npz")
    assert loaded.memory_size == M
    x = np.ones((2, SPEC.observation_size), np.float32)
    memory = np.full((2, M), 0.3, np.float32)
    (mean_a, logp_a), (mean_b, logp_b) = (s.distribution_params(x, None, memory) for s in (loaded, snap))
    np.testing.assert_array_equal(np.asarray(mean_a), np.asarray(mean_b))
    for a, b in zip(logp_a, logp_b, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(SpecError, match=r"memories of shape \(2, 6\)"):
        snap.act(x, rng=np.random.default_rng(0), memories=np.zeros((2, 4), np.float32))


def test_onnx_export_with_memory_feeds_back_as_unity_does(net: object, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from asynctrainer.export.onnx import export_onnx, onnx_feed
    from asynctrainer.nn.networks import ActorCritic

    assert isinstance(net, ActorCritic)
    snap = net.snapshot("mem", 1, 0)
    export_onnx(snap, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert inputs["recurrent_in"] == ["batch", 1, M]
    names = [o.name for o in session.get_outputs()]
    assert names[:3] == ["version_number", "memory_size", "recurrent_out"]
    rng = np.random.default_rng(2)
    memory = np.zeros((4, M), np.float32)  # Unity starts every agent from zeros
    onnx_memory = memory.reshape(4, 1, M)
    for _ in range(3):
        obs = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 2)).astype(np.float32)]
        feed = onnx_feed(snap, obs, memories=onnx_memory.reshape(4, M))
        out = dict(zip(names, session.run(None, feed), strict=True))
        acted = snap.act(obs, deterministic=True, rng=rng, memories=memory)
        assert out["memory_size"].tolist() == [float(M)]
        np.testing.assert_allclose(out["deterministic_continuous_actions"], acted.continuous, atol=1e-5)
        np.testing.assert_array_equal(out["deterministic_discrete_actions"], acted.discrete)
        assert acted.memories is not None
        np.testing.assert_allclose(out["recurrent_out"][:, 0], acted.memories, atol=1e-5)
        memory, onnx_memory = acted.memories, out["recurrent_out"]


def test_savedmodel_refuses_memory_naming_it(net: object, tmp_path: Path) -> None:
    from asynctrainer.export.savedmodel import export_saved_model
    from asynctrainer.nn.networks import ActorCritic

    assert isinstance(net, ActorCritic)
    with pytest.raises(ExportError, match="memory"):
        export_saved_model(net.snapshot("mem", 1, 0), tmp_path / "saved")


@pytest.mark.parametrize("source", ["snapshot", "onnx"])
async def test_policy_server_keeps_each_agents_memory_until_its_episode_ends(
    net: object, source: str, tmp_path: Path
) -> None:
    from asynctrainer.export.onnx import export_onnx
    from asynctrainer.nn.networks import ActorCritic
    from asynctrainer.serving.server import PolicyServer

    assert isinstance(net, ActorCritic)
    snap = net.snapshot("mem", 1, 0)
    policy = snap if source == "snapshot" else export_onnx(snap, tmp_path / "mem.onnx")
    rng = np.random.default_rng(3)
    steps = [[rng.normal(size=(1, 3)).astype(np.float32), rng.normal(size=(1, 2)).astype(np.float32)] for _ in range(4)]

    def expected(obs_seq: list[list[np.ndarray]]) -> list[np.ndarray]:
        """Continuous actions of one agent acting on ``obs_seq`` from zero memory, feeding its memory back."""
        out, memory = [], None
        for obs in obs_seq:
            acted = snap.act(obs, np.ones((1, 5), np.float32), deterministic=True, rng=rng, memories=memory)
            out.append(acted.continuous[0])
            memory = acted.memories
        return out

    async with PolicyServer({"mem": policy}, deterministic=True, max_wait_ms=0.0) as server:
        first = [await server.decide(1, [o[0] for o in obs]) for obs in steps[:3]]
        joined = await server.decide(2, [o[0] for o in steps[3]])  # a new agent starts from zeros
        assert await server.decide(1, [o[0] for o in steps[3]], terminated=True) is None
        again = await server.decide(1, [o[0] for o in steps[0]])  # a new episode: memory reset
    assert all(a is not None for a in (*first, joined, again))
    for got, want in zip(first, expected(steps[:3]), strict=True):
        np.testing.assert_allclose(got.continuous, want, atol=1e-5)  # type: ignore[union-attr]
    assert np.abs(first[2].continuous - expected([steps[2]])[0]).max() > 1e-4  # type: ignore[union-attr]
    np.testing.assert_allclose(joined.continuous, expected([steps[3]])[0], atol=1e-5)  # type: ignore[union-attr]
    np.testing.assert_allclose(again.continuous, expected([steps[0]])[0], atol=1e-5)  # type: ignore[union-attr]


def _decision(ids: list[int], value: float) -> DecisionSteps:
    n = len(ids)
    return DecisionSteps(
        [np.full((n, 3), value, np.float32), np.zeros((n, 2), np.float32)],
        np.zeros(n, np.float32),
        np.asarray(ids, np.int64),
    )


def test_the_env_loop_keeps_each_agents_memory_until_its_episode_ends(net: object) -> None:
    from asynctrainer.nn.networks import ActorCritic
    from asynctrainer.runtime.env_loop import act_for

    assert isinstance(net, ActorCritic)
    snap = net.snapshot("mem", 1, 0)
    processor = AgentProcessor("mem", SPEC, time_horizon=100)
    rng = np.random.default_rng(0)
    fed: list[np.ndarray] = []
    for step in range(3):  # agents 0 and 1 decide; agent 2 joins at step 1
        ids = [0, 1] if step == 0 else [0, 1, 2]
        decision = _decision(ids, float(step + 1))
        fed.append(processor.memories(decision.agent_id, M))
        processor.add_steps(decision, TerminalSteps.empty(SPEC))
        act_for(decision, processor, snap, deterministic=True, training=True, rng=rng)
    assert not fed[0].any(), "new agents start from zeros"
    assert fed[1][:2].any() and not fed[1][2].any(), "agent 2 joined at step 1"
    assert not np.array_equal(fed[2][0], fed[1][0]), "each decision moves the memory on"
    # Agent 0's episode ends: its trajectory holds the memories it acted with; its next episode starts from zeros.
    terminal = TerminalSteps(
        [np.zeros((1, 3), np.float32), np.zeros((1, 2), np.float32)],
        np.ones(1, np.float32),
        np.asarray([0], np.int64),
        np.zeros(1, bool),
    )
    (trajectory,) = processor.add_steps(_decision([1, 2], 3.0), terminal)
    assert trajectory.memories is not None and trajectory.memories.shape == (3, M)
    np.testing.assert_array_equal(trajectory.memories, np.stack([f[0] for f in fed]))
    assert not processor.memories(np.asarray([0]), M).any()
    assert processor.memories(np.asarray([1]), M).any()


def test_sequences_are_cut_per_trajectory_and_padded_at_the_end() -> None:
    source, valid = sequence_layout([10, 4], 3)
    # [0 1 2] [3 4 5] [6 7 8] [9 p p] | [10 11 12] [13 p p]: pads repeat the trajectory's last step.
    assert source.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 10, 11, 12, 13, 13, 13]
    assert valid.tolist() == [1] * 10 + [0, 0] + [1] * 4 + [0, 0]
    batches = sequence_minibatches(6, 3, 7, 2, np.random.default_rng(0))
    assert batches.shape == (6, 6)  # 7 // 3 = 2 sequences a minibatch, 3 minibatches an epoch, 2 epochs
    for rows in batches:
        starts = rows.reshape(2, 3)
        assert (starts[:, 0] % 3 == 0).all() and (np.diff(starts, axis=1) == 1).all()
    assert sorted(batches[:3].reshape(-1).tolist()) == list(range(18)), "an epoch sees every sequence once"


async def test_memory_environment_hides_the_goal_after_the_first_steps() -> None:
    from asynctrainer.envs.spec import ActionBatch

    env = MemoryEnvironment("1D", action_sizes=(0, 1), seed=3, show_steps=2)
    seen = [(await env.reset())["1D"].decision.obs[0][0, 0]]
    goal = env.goals["1D"][0]
    for _ in range(3):
        steps = await env.step(
            {"1D": ActionBatch(np.zeros((1, 0), np.float32), np.ones((1, 1), np.int32), np.zeros(1, np.int64))}
        )
        seen.append(steps["1D"].decision.obs[0][0, 0])
    assert seen == [goal, goal, goal, 0.0]


async def test_ppo_with_memory_trains_checkpoints_and_carries_the_critics_memory() -> None:
    from asynctrainer import Runner
    from asynctrainer.ppo.trainer import PPOTrainer
    from asynctrainer.settings import run_settings_from_dict

    network = {"hidden_units": 16, "num_layers": 1, "memory": {"memory_size": 8, "sequence_length": 4}}
    settings = run_settings_from_dict(
        {
            "behaviors": {
                "1D": {
                    "trainer_type": "ppo",
                    "hyperparameters": {"batch_size": 8, "buffer_size": 32},
                    "network_settings": network,
                    "time_horizon": 6,
                    "max_steps": 96,
                    "strict_on_policy": True,
                }
            }
        }
    )
    env = MemoryEnvironment("1D", action_sizes=(1, 1), seed=0, num_agents=2)
    runner = Runner(settings, env, seed=0, stats_writers=[])
    await runner.run()
    trainer = runner.trainers["1D"]
    assert isinstance(trainer, PPOTrainer) and trainer.update_count >= 2
    snapshot = runner.slots["1D"].latest()
    assert snapshot.memory_size == 8 and snapshot.version >= 2
    state = trainer._algorithm_state()
    assert any("actor_lstm/kernel" in k for k in state) and any("critic_lstm/recurrent_kernel" in k for k in state)
    # Episodes here outlast time_horizon 6: some agent's critic memory is carried to its next trajectory.
    assert trainer._critic_memories and all(m.shape == (8,) for m in trainer._critic_memories.values())
    assert all(np.isfinite(v).all() for v in snapshot.weights().values())

"""Inference-only serving: PolicyServer over a snapshot .npz or an .onnx model, micro-batched."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asynctrainer.envs.game_session import AgentAction
from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.errors import EnvError, SpecError
from asynctrainer.runtime.snapshot import Dense, PolicySnapshot
from asynctrainer.serving.server import PolicyServer, SnapshotPolicy, load_policy
from asynctrainer.testing.fakes import random_snapshot

HYBRID = BehaviorSpec((ObservationSpec((3,)), ObservationSpec((2,))), ActionSpec(2, (3, 2)))
DISCRETE = BehaviorSpec((ObservationSpec((4,)),), ActionSpec.create_discrete((3,)))


def normalized_snapshot(spec: BehaviorSpec, version: int = 0, seed: int = 0) -> PolicySnapshot:
    base = random_snapshot("Walker", spec, version=version, seed=seed, hidden=16)
    rng = np.random.default_rng(seed + 100)
    return PolicySnapshot.create(
        "Walker",
        version,
        0,
        spec,
        hidden=[(layer.kernel, layer.bias) for layer in base.hidden],
        discrete_head=None if base.discrete_head is None else (base.discrete_head.kernel, base.discrete_head.bias),
        continuous_head=None
        if base.continuous_head is None
        else (base.continuous_head.kernel, base.continuous_head.bias),
        log_std=base.log_std,
        obs_mean=rng.normal(size=spec.observation_size),
        obs_std=rng.uniform(0.5, 2.0, size=spec.observation_size),
    )


def split_obs(x: np.ndarray) -> list[np.ndarray]:
    return [x[:, :3], x[:, 3:]]


def test_importing_serving_and_serving_a_snapshot_never_imports_tensorflow(tmp_path: Path) -> None:
    path = tmp_path / "policy.npz"
    random_snapshot("Walker", DISCRETE).save(path)
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        import asynctrainer.serving.server
        assert "tensorflow" not in sys.modules, "import asynctrainer.serving.server imported tensorflow"
        from asynctrainer.serving.server import PolicyServer

        async def main():
            async with PolicyServer({str(path)!r}) as server:
                action = await server.decide(1, [0.0, 1.0, 2.0, 3.0])
            assert action.discrete.shape == (1,)

        asyncio.run(main())
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "onnxruntime"))
        assert not bad, bad
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


async def test_serves_a_saved_snapshot_with_the_snapshots_deterministic_actions(tmp_path: Path) -> None:
    snapshot = normalized_snapshot(HYBRID)
    snapshot.save(tmp_path / "walker.npz")
    obs = np.random.default_rng(1).normal(size=(12, 5)).astype(np.float32)
    expected = snapshot.act(split_obs(obs), deterministic=True, rng=np.random.default_rng(0))
    async with PolicyServer(tmp_path / "walker.npz", deterministic=True) as server:
        assert set(server.behavior_specs) == {"Walker"}
        actions = await asyncio.gather(*(server.decide(i, [obs[i, :3], obs[i, 3:]]) for i in range(12)))
        batch = await server.decide_batch("Walker", np.arange(100, 112), split_obs(obs))
    got_c = np.stack([a.continuous for a in actions if a is not None])
    got_d = np.stack([a.discrete for a in actions if a is not None])
    np.testing.assert_allclose(got_c, expected.continuous, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got_d, expected.discrete)
    np.testing.assert_array_equal(batch.discrete, expected.discrete)
    assert server.stats.batches == 2, "the concurrent decides shared one forward pass"


def test_sampled_actions_follow_the_snapshots_distribution_and_respect_masks() -> None:
    snapshot = random_snapshot("Walker", DISCRETE, seed=4)
    policy = SnapshotPolicy(snapshot)
    x = np.tile(np.array([[0.3, -0.2, 0.1, 0.5]], np.float32), (20000, 1))
    _, logp = snapshot.distribution_params([x[:1]])
    _, disc = policy.act([x], None, deterministic=False, rng=np.random.default_rng(0))
    freq = np.bincount(disc[:, 0], minlength=3) / len(disc)
    np.testing.assert_allclose(freq, np.exp(logp[0][0]), atol=0.015)
    allowed = np.tile(np.array([[1.0, 0.0, 1.0]], np.float32), (20000, 1))
    _, masked = policy.act([x], allowed, deterministic=False, rng=np.random.default_rng(1))
    assert 1 not in set(masked[:, 0].tolist())
    cont_spec = BehaviorSpec((ObservationSpec((2,)),), ActionSpec.create_continuous(1))
    cont = SnapshotPolicy(random_snapshot("C", cont_spec, seed=2))
    actions, _ = cont.act([np.zeros((20000, 2), np.float32)], None, deterministic=False, rng=np.random.default_rng(2))
    assert actions.min() >= -1.0 and actions.max() <= 1.0 and actions.std() > 0.1


async def test_concurrent_decides_share_one_forward_pass_and_max_batch_caps_it() -> None:
    calls: list[int] = []
    snapshot = random_snapshot("Walker", DISCRETE)
    inner = SnapshotPolicy(snapshot)

    class Counting(SnapshotPolicy):
        def act(self, obs, allowed, *, deterministic, rng):  # type: ignore[no-untyped-def]
            calls.append(len(obs[0]))
            return inner.act(obs, allowed, deterministic=deterministic, rng=rng)

    async with PolicyServer(Counting(snapshot), max_batch=16) as server:
        await asyncio.gather(*(server.decide(i, np.zeros(4)) for i in range(40)))
    assert calls == [16, 16, 8]


async def test_publish_swaps_the_policy_between_two_batches() -> None:
    old, new = random_snapshot("Walker", DISCRETE, 0, seed=1), random_snapshot("Walker", DISCRETE, 1, seed=2)
    x = np.random.default_rng(3).normal(size=(64, 4)).astype(np.float32)
    det = {s.version: s.act([x], deterministic=True, rng=np.random.default_rng()).discrete[:, 0] for s in (old, new)}
    assert not np.array_equal(det[0], det[1])
    async with PolicyServer(old, deterministic=True) as server:
        first = await server.decide_batch(None, np.arange(64), x)
        server.publish(new)
        second = await server.decide_batch(None, np.arange(64), x)
        assert server.policies["Walker"].version == 1  # type: ignore[attr-defined]
        with pytest.raises(SpecError, match="has spec"):
            server.publish(random_snapshot("Walker", HYBRID))
        with pytest.raises(SpecError, match="unknown behavior 'Other'"):
            server.publish(new, behavior="Other")
    np.testing.assert_array_equal(first.discrete[:, 0], det[0])
    np.testing.assert_array_equal(second.discrete[:, 0], det[1])


async def test_several_behaviors_and_validation_as_in_game_session() -> None:
    policies = {"A": random_snapshot("A", DISCRETE), "B": random_snapshot("B", HYBRID)}
    async with PolicyServer(policies) as server:
        a, b = await asyncio.gather(
            server.decide(1, np.zeros(4), behavior="A"), server.decide(2, [np.zeros(3), np.zeros(2)], behavior="B")
        )
        assert a is not None and a.discrete.shape == (1,)
        assert b is not None and b.continuous.shape == (2,) and b.discrete.shape == (2,)
        with pytest.raises(SpecError, match="agent 3 gave no behavior"):
            await server.decide(3, np.zeros(4))
        with pytest.raises(SpecError, match=r"agent 3 of behavior 'A' has shape \(5,\), expected \(4,\)"):
            await server.decide(3, np.zeros(5), behavior="A")
        with pytest.raises(SpecError, match="contains NaN"):
            await server.decide(3, [np.nan, 0, 0, 0], behavior="A")
        # Rewards and episode ends are accepted and ignored.
        assert await server.decide(1, np.zeros(4), reward=1.0, terminated=True, behavior="A") is None
        assert server.leave(2)


async def test_a_failing_forward_pass_fails_its_batch_and_the_server_goes_on_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One bad batch (a policy that raises on some input) fails only its decisions; the same
    server answers the next batch, and a run of failures is logged once, not per batch."""
    snapshot = random_snapshot("Walker", DISCRETE)

    class FailsOnLargeInput(SnapshotPolicy):
        def act(self, obs, allowed, *, deterministic, rng):  # type: ignore[no-untyped-def]
            if (obs[0] > 100).any():
                raise RuntimeError("boom")
            return super().act(obs, allowed, deterministic=deterministic, rng=rng)

    async with PolicyServer(FailsOnLargeInput(snapshot)) as server:
        for _ in range(3):
            with pytest.raises(EnvError, match=r"No action for agent 1 of behavior 'Walker': .*RuntimeError: boom"):
                await asyncio.wait_for(server.decide(1, np.full(4, 1000.0)), 5)
        assert isinstance(server.error, RuntimeError)
        assert server.stats.failed_batches == 3
        action = await asyncio.wait_for(server.decide(1, np.zeros(4)), 5)
        assert action is not None and action.discrete.shape == (1,)
        assert 1 in server._session.agent_ids
    failures = [r for r in caplog.records if "failed on a batch" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert any("acts again, after 3 failed batches" in r.getMessage() for r in caplog.records)


async def test_a_failing_behavior_does_not_stop_the_others() -> None:
    class Broken(SnapshotPolicy):
        def act(self, obs, allowed, *, deterministic, rng):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    policies = {"A": Broken(random_snapshot("A", DISCRETE)), "B": random_snapshot("B", HYBRID)}
    async with PolicyServer(policies, max_wait_ms=50) as server:
        a, b = await asyncio.gather(
            server.decide(1, np.zeros(4), behavior="A"),
            server.decide(2, [np.zeros(3), np.zeros(2)], behavior="B"),
            return_exceptions=True,
        )
        assert isinstance(a, EnvError) and "behavior 'A'" in str(a)
        assert isinstance(b, AgentAction) and b.continuous.shape == (2,)
        assert server.stats.failed_batches == 1


def test_load_policy_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(EnvError, match="No policy file at"):
        load_policy(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(EnvError, match="Could not load the policy snapshot"):
        load_policy(tmp_path / "junk.npz")
    with pytest.raises(EnvError, match="Cannot serve a int"):
        load_policy(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", [DISCRETE, HYBRID, BehaviorSpec((ObservationSpec((3,)),), ActionSpec(2, ()))],
                         ids=["discrete", "hybrid", "continuous"])  # fmt: skip
async def test_serves_an_exported_onnx_model_like_the_snapshot(tmp_path: Path, spec: BehaviorSpec) -> None:
    pytest.importorskip("onnxruntime")
    onnx_export = pytest.importorskip("asynctrainer.export.onnx")
    snapshot = normalized_snapshot(spec, version=5)
    path = tmp_path / "Walker-5000.onnx"
    onnx_export.export_onnx(snapshot, path)
    n = 16
    rng = np.random.default_rng(7)
    obs = [rng.normal(size=(n, *o.shape)).astype(np.float32) for o in spec.observation_specs]
    mask = None
    if spec.action_spec.is_discrete():
        mask = np.zeros((n, spec.action_spec.mask_size), bool)
        mask[::2, 0] = True  # forbid action 0 of branch 0 for every other agent
    expected = snapshot.act(
        obs, None if mask is None else (~mask).astype(np.float32), deterministic=True, rng=np.random.default_rng()
    )
    async with PolicyServer(path, deterministic=True) as server:
        assert set(server.behavior_specs) == {"Walker"}
        served = server.behavior_specs["Walker"]
        assert served.action_spec == spec.action_spec
        assert [o.shape for o in served.observation_specs] == [o.shape for o in spec.observation_specs]
        one = obs[0] if len(obs) == 1 else obs
        batch = await server.decide_batch("Walker", np.arange(n), one, action_mask=mask)
        single = await server.decide(99, [o[0] for o in obs] if len(obs) > 1 else obs[0][0])
    np.testing.assert_allclose(batch.continuous, expected.continuous, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(batch.discrete, expected.discrete)
    unmasked = snapshot.act([o[:1] for o in obs], deterministic=True, rng=np.random.default_rng())
    assert single is not None
    np.testing.assert_array_equal(single.discrete, unmasked.discrete[0])
    np.testing.assert_allclose(single.continuous, unmasked.continuous[0], rtol=1e-4, atol=1e-5)
    if mask is not None:
        assert (batch.discrete[::2, 0] != 0).all()
    # Sampling through the model's own random ops stays in range and respects masks.
    async with PolicyServer(path) as server:
        sampled = await server.decide_batch("Walker", np.arange(n), one, action_mask=mask)
    assert (np.abs(sampled.continuous) <= 1.0).all()
    if mask is not None:
        assert (sampled.discrete[::2, 0] != 0).all()


@pytest.mark.parametrize(
    "bad_call",
    [
        lambda s: s.decide(2**63, np.zeros(4)),
        lambda s: s.decide(-(2**63) - 1, np.zeros(4)),
        lambda s: s.decide_batch(None, np.array([1, 2**64 - 1], np.uint64), np.zeros((2, 4))),
        lambda s: s.decide(3, np.zeros(4), terminated=np.array([True, False])),
        lambda s: s.decide(3, np.zeros(4), behavior=["Walker"]),
        lambda s: s.decide(3, np.zeros(4), action_mask=[[True], [False, True]]),
    ],
    ids=["id 2**63", "id below int64", "uint64 max in a batch", "terminated array", "behavior list", "ragged mask"],
)
async def test_one_bad_call_is_refused_and_the_server_keeps_serving_everyone(bad_call: Any) -> None:
    async with PolicyServer(random_snapshot("Walker", DISCRETE), deterministic=True) as server:
        others = [asyncio.ensure_future(server.decide(i, np.zeros(4))) for i in range(3)]
        with pytest.raises(SpecError):
            await bad_call(server)
        done = await asyncio.wait_for(asyncio.gather(*others), 5)
        assert all(a is not None for a in done)
        assert server.error is None and 3 not in server._session.agent_ids
        again = await server.decide_batch(None, [10, 11], np.zeros((2, 4)))
        assert again.discrete.shape == (2, 1)


@pytest.mark.parametrize(
    ("actions", "why"),
    [
        (lambda n: (np.zeros((n, 0), np.float32), np.zeros((n + 1, 1), np.int32)), r"discrete \(3, 1\); expected"),
        (lambda n: (np.zeros((n, 0), np.float32), np.full((n, 1), 7, np.int32)), "outside their branches"),
        (lambda n: (np.zeros((n, 0), np.float32), np.zeros((n, 1), np.float32)), "outside their branches"),
    ],
)
async def test_a_policy_returning_unusable_actions_fails_the_waiting_decisions(actions: Any, why: str) -> None:
    """The batch it answered badly is not stranded: its decides fail with EnvError, none waits forever."""
    snapshot = random_snapshot("Walker", DISCRETE)

    class Wrong(SnapshotPolicy):
        def act(self, obs, allowed, *, deterministic, rng):  # type: ignore[no-untyped-def]
            return actions(len(obs[0]))

    async with PolicyServer(Wrong(snapshot), max_wait_ms=50) as server:
        waiting = [asyncio.ensure_future(server.decide(i, np.zeros(4))) for i in range(2)]
        done, _ = await asyncio.wait(waiting, timeout=5)
        assert len(done) == 2, "every decide() of the refused batch was answered"
        for w in waiting:
            with pytest.raises(EnvError, match=f"forward pass failed .*SpecError: .*{why}"):
                w.result()


async def test_a_policy_returning_nan_continuous_actions_fails_its_batch() -> None:
    class Nan(SnapshotPolicy):
        def act(self, obs, allowed, *, deterministic, rng):  # type: ignore[no-untyped-def]
            cont, disc = super().act(obs, allowed, deterministic=deterministic, rng=rng)
            return np.full_like(cont, np.nan), disc

    async with PolicyServer(Nan(random_snapshot("Walker", HYBRID))) as server:
        with pytest.raises(EnvError, match="NaN or infinite"):
            await asyncio.wait_for(server.decide(1, [np.zeros(3), np.zeros(2)]), 5)


def _with(snapshot: PolicySnapshot, **fields: Any) -> PolicySnapshot:
    """``snapshot`` with some fields replaced (bypassing create(): a hostile or corrupt snapshot)."""
    return dataclasses.replace(snapshot, **fields)


def _broken_snapshots() -> dict[str, tuple[PolicySnapshot, str]]:
    good = random_snapshot("Walker", HYBRID, hidden=16)
    (layer,) = good.hidden
    disc, cont = good.discrete_head, good.continuous_head
    assert disc is not None and cont is not None
    f32 = np.float32
    nan_kernel = layer.kernel.copy()
    nan_kernel[2, 3] = np.nan
    return {
        "hidden kernel rows": (
            _with(good, hidden=(Dense(np.zeros((6, 16), f32), layer.bias),)),
            r"hidden_0/kernel has shape \(6, 16\), expected \(5, 16\)",
        ),
        "hidden bias": (
            _with(good, hidden=(Dense(layer.kernel, np.zeros(15, f32)),)),
            r"hidden_0/bias has shape \(15,\), expected \(16,\)",
        ),
        "second layer": (
            _with(good, hidden=(layer, Dense(np.zeros((8, 16), f32), np.zeros(16, f32)))),
            r"hidden_1/kernel has shape \(8, 16\), expected \(16, 16\)",
        ),
        "discrete head": (
            _with(good, discrete_head=Dense(np.zeros((16, 4), f32), np.zeros(4, f32))),
            r"discrete_head/kernel has shape \(16, 4\), expected \(16, 5\)",
        ),
        "no discrete head": (_with(good, discrete_head=None), r"discrete_head is missing"),
        "continuous head": (
            _with(good, continuous_head=Dense(cont.kernel, np.zeros(3, f32))),
            r"continuous_head/bias has shape \(3,\), expected \(2,\)",
        ),
        "log_std": (_with(good, log_std=np.zeros(3, f32)), r"log_std has shape \(3,\), expected \(2,\)"),
        "obs_mean": (
            _with(good, obs_mean=np.zeros(4, f32), obs_std=np.ones(5, f32)),
            r"obs_mean has shape \(4,\), expected \(5,\)",
        ),
        "NaN kernel": (
            _with(good, hidden=(Dense(nan_kernel, layer.bias),)),
            r"hidden_0/kernel holds 1 NaN or infinite values",
        ),
        "inf bias": (
            _with(good, discrete_head=Dense(disc.kernel, np.array([0, np.inf, 0, 0, 0], f32))),
            r"discrete_head/bias holds 1 NaN or infinite values",
        ),
        "zero obs_std": (
            _with(good, obs_mean=np.zeros(5, f32), obs_std=np.array([1, 1, 0, 1, 1], f32)),
            r"obs_std must be > 0",
        ),
        "huge log_std": (_with(good, log_std=np.array([0.0, 200.0], f32)), r"exp\(log_std\) overflows"),
    }


BROKEN = _broken_snapshots()


@pytest.mark.parametrize("case", list(BROKEN))
async def test_a_snapshot_whose_weights_do_not_fit_or_are_not_finite_is_refused(case: str, tmp_path: Path) -> None:
    """At load (object or .npz) and at publish: a SpecError naming the array; the old policy keeps serving."""
    bad, match = BROKEN[case]
    with pytest.raises(SpecError, match=rf"policy snapshot of behavior 'Walker' .*{match}"):
        PolicyServer(bad)
    bad.save(tmp_path / "bad.npz")
    with pytest.raises(SpecError, match=match):
        load_policy(tmp_path / "bad.npz")
    good = random_snapshot("Walker", HYBRID, hidden=16, seed=3)
    obs = np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)
    expected = good.act(split_obs(obs), deterministic=True, rng=np.random.default_rng())
    async with PolicyServer(good, deterministic=True) as server:
        with pytest.raises(SpecError, match=rf"{match}.*keeps serving the previous policy"):
            server.publish(bad)
        with pytest.raises(SpecError, match=match):
            server.publish(tmp_path / "bad.npz")
        served = await server.decide_batch(None, np.arange(8), split_obs(obs))
        assert server.error is None
    np.testing.assert_array_equal(served.discrete, expected.discrete)
    np.testing.assert_allclose(served.continuous, expected.continuous, rtol=1e-5, atol=1e-6)


def test_an_onnx_model_with_non_finite_weights_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    onnx_export = pytest.importorskip("asynctrainer.export.onnx")
    path = tmp_path / "Walker.onnx"
    onnx_export.export_onnx(random_snapshot("Walker", DISCRETE), path)
    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if onnx.numpy_helper.to_array(i).size > 4)
    values = onnx.numpy_helper.to_array(init).copy()
    values.flat[1] = np.nan
    init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
    onnx.save(model, str(path))
    with pytest.raises(SpecError, match=rf"ONNX policy .*Walker.onnx: weight '{init.name}' holds 1 NaN or infinite"):
        PolicyServer(path)

"""Reading Unity's .demo files (real ones from ML-Agents) and writing our own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asynctrainer import DemonstrationError, DemonstrationWriter, load_demonstration
from asynctrainer.demos.format import BRAIN_OFFSET, read_demo_file
from asynctrainer.envs.spec import DIM_TRANSLATIONAL_EQUIVARIANCE, ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.errors import SpecError, UsageError
from asynctrainer.files import is_temp_name

DEMOS = Path(__file__).resolve().parents[1] / "data" / "demos"

#: file → (brain name, observation shapes, action spec, records, episodes, which action a record holds)
EXPECTED = {
    "ExpertBasic": ("BasicLearning", [(20,)], ActionSpec(0, (3,)), 73, 11, "action_at_observation"),
    "Expert3DBall": ("3DBallLearning", [(8,)], ActionSpec(2, ()), 549, 1, "action_at_observation"),
    "test": ("3DBall?team=0", [(8,)], ActionSpec(2, ()), 2144, 22, "action_before_observation"),
    "testdcvis": (
        "VisualFoodCollectorLearning",
        [(84, 84, 3), (0,)],
        ActionSpec(0, (3, 3, 3, 2)),
        38,
        1,
        "action_at_observation",
    ),
    "testhybridvis": (
        "VisualFoodCollector?team=0",
        [(84, 84, 3), (1,)],
        ActionSpec(3, (2,)),
        25,
        1,
        "action_before_observation",
    ),
}


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_unity_demo_files_load_with_the_counts_their_meta_announces(stem: str) -> None:
    brain, shapes, actions, steps, episodes, generation = EXPECTED[stem]
    demo = load_demonstration(DEMOS / f"{stem}.demo")
    assert demo.brain_name == brain
    assert demo.behavior_name == brain.partition("?")[0]
    assert [o.shape for o in demo.spec.observation_specs] == shapes
    assert demo.spec.action_spec == actions
    assert demo.number_steps == steps == len(demo.parts[0])
    assert demo.number_episodes == episodes == int(demo.parts[0].done.sum()) + 1
    assert demo.generations == (generation,)
    # The meta's mean reward is the sum of all rewards over the episode count (Unity's rule; it
    # sums in float32, one reward after another, hence the tolerance).
    total = float(demo.parts[0].reward.astype(np.float64).sum())
    assert demo.mean_reward == pytest.approx(total / episodes, rel=1e-4, abs=1e-6)
    rows = demo.transitions()
    # One transition per record that is not a terminal and has a next record of its agent.
    ids, done = demo.parts[0].agent_id.tolist(), demo.parts[0].done.tolist()
    starts = [i for i in range(steps) if not done[i] and ids[i] in ids[i + 1 :]]
    assert len(rows) == len(starts)
    assert [o.shape[1:] for o in rows.obs] == shapes


@pytest.mark.parametrize("stem", ["Expert3DBall", "test"])
def test_each_observation_is_paired_with_the_action_taken_at_it_for_both_recorder_generations(stem: str) -> None:
    """In 3DBall an action turns the platform: the rotation change after an observation follows its action."""
    rows = load_demonstration(DEMOS / f"{stem}.demo").transitions()
    keep = ~rows.done[:-1]
    turn = (rows.obs[0][1:, :2] - rows.obs[0][:-1, :2])[keep]
    action = rows.continuous[:-1][keep]
    for axis in range(2):
        assert np.corrcoef(turn[:, axis], action[:, axis])[0, 1] > 0.99


def test_expert_basic_always_moves_right_and_returns_093() -> None:
    demo = load_demonstration(DEMOS / "ExpertBasic.demo")
    rows = demo.transitions()
    assert (rows.discrete[:, 0] == 2).all()
    record = demo.parts[0]
    ends = np.flatnonzero(record.done)
    starts = np.concatenate([[0], ends[:-1] + 1])
    returns = [float(record.reward[s : e + 1].sum()) for s, e in zip(starts, ends, strict=True)]
    assert returns == pytest.approx([0.93] * 10, abs=1e-5)


@pytest.mark.parametrize("stem", ["testdcvis", "testhybridvis"])
def test_png_cameras_decode_channel_last_from_either_layout(stem: str) -> None:
    camera = load_demonstration(DEMOS / f"{stem}.demo").parts[0].obs[0]
    assert camera.shape[1:] == (84, 84, 3)
    assert camera.dtype == np.float32 and camera.min() >= 0.0 and camera.max() <= 1.0
    assert camera.std() > 0.01  # an image, not a blank


def test_a_directory_loads_every_file_of_one_behaviors_specs(tmp_path: Path) -> None:
    for name in ("a.demo", "b.demo"):
        (tmp_path / name).write_bytes((DEMOS / "Expert3DBall.demo").read_bytes())
    (tmp_path / "notes.txt").write_text("not a demo")
    demo = load_demonstration(tmp_path)
    assert demo.number_steps == 2 * 549 and len(demo.paths) == 2
    assert len(demo.transitions()) == 2 * 548


def test_a_directory_of_mixed_specs_is_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "a.demo").write_bytes((DEMOS / "Expert3DBall.demo").read_bytes())
    (tmp_path / "b.demo").write_bytes((DEMOS / "ExpertBasic.demo").read_bytes())
    with pytest.raises(DemonstrationError, match=r"b\.demo has other specs than a\.demo"):
        load_demonstration(tmp_path)


def test_check_spec_names_the_first_difference() -> None:
    demo = load_demonstration(DEMOS / "testhybridvis.demo")
    vector = ObservationSpec((1,), "VectorSensor_size1")
    camera = ObservationSpec((84, 84, 3), "CameraSensor", (2, 2, 1))
    demo.check_spec(BehaviorSpec((camera, vector), ActionSpec(3, (2,))), "VisualFoodCollector")
    with pytest.raises(
        DemonstrationError, match=r"3 continuous actions and discrete branches \[2\] and the behavior has 2 continuous"
    ):
        demo.check_spec(BehaviorSpec((camera, vector), ActionSpec(2, (2,))), "Food")
    with pytest.raises(DemonstrationError, match="2 observations per agent and the behavior has 1"):
        demo.check_spec(BehaviorSpec((camera,), ActionSpec(3, (2,))), "Food")
    small = ObservationSpec((64, 64, 3), "CameraSensor", (2, 2, 1))
    with pytest.raises(
        DemonstrationError,
        match=r"observation 'CameraSensor' has shape \[84, 84, 3\] and the behavior's observation 0 has shape "
        r"\[64, 64, 3\]",
    ):
        demo.check_spec(BehaviorSpec((small, vector), ActionSpec(3, (2,))), "Food")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:200], "record .* is cut short or corrupt"),
        (lambda data: data[:10], "the meta at byte 0 is cut short"),
        (lambda data: b"\x02\x08\x07" + data[3:], "API version is 7, and versions 0 and 1 are supported"),
        (lambda data: b"", "the meta at byte 0"),
    ],
)
def test_a_damaged_file_is_a_demonstration_error_naming_it(tmp_path: Path, damage: object, message: str) -> None:
    path = tmp_path / "bad.demo"
    path.write_bytes(damage((DEMOS / "ExpertBasic.demo").read_bytes()))  # type: ignore[operator]
    with pytest.raises(DemonstrationError, match=message) as err:
        load_demonstration(path)
    assert "bad.demo" in str(err.value) and err.value.path == str(path)


def test_paths_that_are_no_demonstration_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DemonstrationError, match="no such file or directory"):
        load_demonstration(tmp_path / "missing.demo")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(DemonstrationError, match=r"does not end in \.demo"):
        load_demonstration(tmp_path / "x.txt")
    with pytest.raises(DemonstrationError, match=r"the directory has no \.demo file"):
        load_demonstration(tmp_path)


HYBRID = BehaviorSpec(
    (
        ObservationSpec((6, 5, 3), "Camera", (DIM_TRANSLATIONAL_EQUIVARIANCE, DIM_TRANSLATIONAL_EQUIVARIANCE, 1)),
        ObservationSpec((4,), "Vector", (1,)),
    ),
    ActionSpec(2, (3, 2)),
)


def _record_episodes(
    writer: DemonstrationWriter, rng: np.random.Generator
) -> list[tuple[list[np.ndarray], np.ndarray, np.ndarray, float, bool]]:
    """Two agents, interleaved, two episodes each; returns each transition as the reader should give it.

    The agents step in lock step, so the order in which transitions complete here is the order of
    their observations in the file, the reader's order.
    """
    expected: list[tuple[list[np.ndarray], np.ndarray, np.ndarray, float, bool]] = []
    pending: dict[int, tuple[list[np.ndarray], np.ndarray, np.ndarray]] = {}
    for step in range(12):
        for agent in (5, -3):
            obs = [rng.random((6, 5, 3), dtype=np.float32), rng.standard_normal(4).astype(np.float32)]
            reward = float(rng.standard_normal())
            done = step in (5, 11)
            if agent in pending:
                before = pending.pop(agent)
                expected.append((before[0], before[1], before[2], reward, done))
            if done:
                writer.add(agent, obs, reward=reward, done=True, interrupted=step == 11)
                continue
            c = rng.uniform(-1, 1, 2).astype(np.float32)
            d = np.array([rng.integers(3), rng.integers(2)], np.int32)
            writer.add(agent, obs, reward=reward, continuous=c, discrete=d, mask=[True] * 5)
            pending[agent] = (obs, c, d)
    return expected


def test_written_demonstrations_read_back_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "recorded" / "Expert.demo"
    with DemonstrationWriter(path, HYBRID, "Walker", team=1) as writer:
        expected = _record_episodes(writer, rng)
    demo = load_demonstration(path)
    assert demo.brain_name == "Walker?team=1" and demo.generations == ("action_before_observation",)
    assert demo.spec == HYBRID
    assert demo.number_steps == 24 and demo.number_episodes == 4 + 1
    assert demo.mean_reward == pytest.approx(float(demo.parts[0].reward.sum()) / 5, rel=1e-6)
    rows = demo.transitions()
    assert len(rows) == len(expected) == 20
    for i, (obs, c, d, reward, done) in enumerate(expected):
        np.testing.assert_array_equal(rows.obs[0][i], obs[0])
        np.testing.assert_array_equal(rows.obs[1][i], obs[1])
        np.testing.assert_array_equal(rows.continuous[i], c)
        np.testing.assert_array_equal(rows.discrete[i], d)
        assert rows.reward[i] == pytest.approx(reward) and rows.done[i] == done
    file = read_demo_file(path)
    assert file.trailing == file.meta.SerializeToString()  # the copy of the meta newer recorders append
    assert file.records[0].agent_info.observations[0].shape == [3, 6, 5]  # cameras channel-first, as Unity 3.x
    assert list(file.records[0].action_info.continuous_actions) == [0.0, 0.0]  # an agent's first record
    assert file.records[-1].agent_info.max_step_reached


def test_a_long_name_with_large_counts_still_fits_before_the_brain(tmp_path: Path) -> None:
    spec = BehaviorSpec((ObservationSpec((1,)),), ActionSpec(1, ()))
    writer = DemonstrationWriter(tmp_path / "x.demo", spec, "B", name="A very long demonstration name!")
    encoder = writer.encoder
    assert encoder.name == "A very long demo"  # Unity's 16 characters of [A-Za-z0-9 -]
    encoder.number_steps, encoder.done_records = 2**30, 2**30  # the counts of a huge recording
    assert len(encoder.header(encoder.meta())) == BRAIN_OFFSET
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_an_unclosed_recording_leaves_only_a_temporary(tmp_path: Path) -> None:
    spec = BehaviorSpec((ObservationSpec((1,)),), ActionSpec(1, ()))
    writer = DemonstrationWriter(tmp_path / "x.demo", spec, "B")
    writer.add(0, [np.zeros(1)], continuous=[0.5])
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 1 and is_temp_name(names[0])
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["x.demo"]
    with pytest.raises(UsageError, match="is closed"):
        writer.add(0, [np.zeros(1)], continuous=[0.5])


def test_a_block_that_raises_still_keeps_what_was_recorded(tmp_path: Path) -> None:
    spec = BehaviorSpec((ObservationSpec((1,)),), ActionSpec(1, ()))
    with pytest.raises(RuntimeError), DemonstrationWriter(tmp_path / "x.demo", spec, "B") as writer:
        writer.add(0, [np.zeros(1)], continuous=[0.5])
        writer.add(0, [np.ones(1)], continuous=[0.25])
        raise RuntimeError("the game crashed")
    rows = load_demonstration(tmp_path / "x.demo").transitions()
    assert rows.continuous.tolist() == [[0.5]]


def test_bad_records_are_refused_and_change_nothing(tmp_path: Path) -> None:
    writer = DemonstrationWriter(tmp_path / "x.demo", HYBRID, "B")
    obs = [np.zeros((6, 5, 3)), np.zeros(4)]
    with pytest.raises(SpecError, match="1 continuous and 2 discrete values where behavior 'B\\?team=0' has 2 and 2"):
        writer.add(0, obs, continuous=[0.1], discrete=[0, 0])
    with pytest.raises(SpecError, match="outside the branches"):
        writer.add(0, obs, continuous=[0.1, 0.2], discrete=[3, 0])
    with pytest.raises(SpecError, match=r"observation 1 has shape \[3\]"):
        writer.add(0, [obs[0], np.zeros(3)], continuous=[0.1, 0.2], discrete=[0, 0])
    with pytest.raises(SpecError, match="not a finite float32"):
        writer.add(0, obs, reward=1e39, continuous=[0.1, 0.2], discrete=[0, 0])
    assert writer.number_steps == 0
    with pytest.raises(DemonstrationError, match=r"must end in \.demo"):
        DemonstrationWriter(tmp_path / "x.txt", HYBRID, "B")
    writer.abort()

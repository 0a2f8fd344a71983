"""CheckpointManager with fake trainers (no TensorFlow): coalescing, pruning, status, crash injection, final save."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from asynctrainer import Runner
from asynctrainer.checkpoints.format import TMP_MARK, list_checkpoints, read_manifest, write_checkpoint
from asynctrainer.checkpoints.manager import (
    FAILED_SAVES_STAT,
    CheckpointManager,
    find_checkpoint,
    load_checkpoint_state,
)
from asynctrainer.errors import CheckpointLoadError, CheckpointSaveError
from asynctrainer.runtime.contracts import TrainerContext
from asynctrainer.runtime.snapshot import PolicySnapshot
from asynctrainer.runtime.trainer import RLTrainer
from asynctrainer.testing import make_run_settings
from asynctrainer.testing.fakes import CountingEnv, FakeTrainer


class FakeCheckpointTrainer(FakeTrainer):
    """A FakeTrainer with numpy "weights" and "optimizer slots" and an optionally slow capture."""

    def __init__(self, *args: Any, capture_seconds: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capture_seconds = capture_seconds
        self.weights = np.zeros((3, 2), np.float32)
        self.slots = np.zeros(2, np.float64)
        self.restored_weights_only: bool | None = None
        self.captures = 0
        self.capture_steps: list[int] = []
        self._lock = threading.Lock()

    def _update_policy(self) -> dict[str, float]:
        stats = super()._update_policy()
        self.weights = self.weights + np.float32(0.5)
        self.slots = self.slots * 0.9 + 1.0
        return stats

    def _algorithm_state(self) -> dict[str, np.ndarray]:
        return {"weights/w": self.weights.copy(), "optimizer/000": self.slots.copy()}

    def _restore_algorithm_state(self, state: Mapping[str, np.ndarray], *, weights_only: bool) -> None:
        self.weights = np.array(state["weights/w"])
        self.restored_weights_only = weights_only
        if not weights_only:
            self.slots = np.array(state["optimizer/000"])

    def capture(
        self, loop_state: Mapping[str, np.ndarray], queued: object = None
    ) -> tuple[dict[str, np.ndarray], PolicySnapshot]:
        with self._lock:
            self.captures += 1
            self.capture_steps.append(int(loop_state["trainer/step"][0]))
        captured = super().capture(loop_state, queued)
        time.sleep(self.capture_seconds)  # a slow capture, in the worker thread
        return captured

    def _make_snapshot(self, version: int) -> PolicySnapshot:
        return dataclasses.replace(super()._make_snapshot(version), step=self.step)


def fake_factory(**options: Any) -> Any:
    made: list[FakeCheckpointTrainer] = []

    def factory(name: str, settings: Any, spec: Any, context: TrainerContext) -> FakeCheckpointTrainer:
        trainer = FakeCheckpointTrainer(name, settings, stats_reporter=context.stats_reporter, **options)
        made.append(trainer)
        return trainer

    factory.made = made  # type: ignore[attr-defined]
    return factory


class CountingManager(CheckpointManager):
    """Records how many saves of each behavior are in flight (from capture to commit) at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self._count_lock = threading.Lock()

    def attach(self, trainer: RLTrainer[Any]) -> None:
        super().attach(trainer)
        name, capture = trainer.behavior_name, trainer.capture

        def counted_capture(
            loop_state: Mapping[str, np.ndarray], queued: object = None
        ) -> tuple[dict[str, np.ndarray], PolicySnapshot]:
            with self._count_lock:
                self.in_flight[name] = self.in_flight.get(name, 0) + 1
                self.max_in_flight[name] = max(self.max_in_flight.get(name, 0), self.in_flight[name])
            return capture(loop_state, queued)

        trainer.capture = counted_capture  # type: ignore[method-assign]

    def _write(self, trainer: RLTrainer[Any], *args: Any) -> Path:
        try:
            return super()._write(trainer, *args)
        finally:
            with self._count_lock:
                self.in_flight[trainer.behavior_name] -= 1


def make_trainer(name: str = "Counter", *, step: int = 100, **options: Any) -> FakeCheckpointTrainer:
    settings = make_run_settings(name, checkpoint_interval=50, keep_checkpoints=3)
    trainer = FakeCheckpointTrainer(name, settings.behaviors[name], **options)
    trainer.add_policy(name, trainer.create_policy(name, CountingEnv(name).behavior_specs[name]))
    trainer._step = step
    return trainer


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if TMP_MARK in p.name]


def status_of(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "run_logs" / "training_status.json").read_text())
    return data


async def test_requests_during_a_save_cause_exactly_one_more_save_and_the_loop_stays_responsive(
    tmp_path: Path,
) -> None:
    trainers = [make_trainer("A", capture_seconds=0.4), make_trainer("B", capture_seconds=0.4)]
    manager = CountingManager(tmp_path / "run", export_onnx=False)
    for t in trainers:
        manager.attach(t)
    a, b = trainers
    ticks_during_saves = 0

    async def ticker() -> None:
        nonlocal ticks_during_saves
        while True:
            await anyio.sleep(0.005)
            if any(manager.in_flight.values()):
                ticks_during_saves += 1

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            await tg.start(manager.run)
            manager.request(a, a.step)
            manager.request(b, b.step)
            while a.captures == 0 or b.captures == 0:
                await anyio.sleep(0.001)
            # Many requests while the first saves are in flight, the trainers moving on meanwhile.
            for _ in range(40):
                for t in trainers:
                    t._step += 5
                    manager.request(t, t.step)
                    await t.save_model()  # Trainer.save_model() requests through the same path
                await anyio.sleep(0)
            while len(manager.saves) < 4:
                await anyio.sleep(0.01)
            await anyio.sleep(0.6)  # time for a (wrong) third save to start
            tg.cancel_scope.cancel()
    for t in trainers:
        # Exactly one more save, and it captured the state after the last request.
        assert t.capture_steps == [100, 300]
        assert [s for n, s, _ in manager.saves if n == t.behavior_name] == [100, 300]
        assert manager.max_in_flight[t.behavior_name] == 1
        assert [c.step for c in list_checkpoints(tmp_path / "run" / t.behavior_name / "checkpoints")] == [100, 300]
    # Saves ran in threads: the loop ticked all along (a blocked loop would tick about twice).
    assert ticks_during_saves >= 30


async def test_the_final_save_waits_for_a_save_in_flight(tmp_path: Path) -> None:
    trainer = make_trainer(capture_seconds=0.3)
    manager = CountingManager(tmp_path / "run", export_onnx=False)
    manager.attach(trainer)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(manager.run)
            manager.request(trainer, trainer.step)
            while trainer.captures == 0:
                await anyio.sleep(0.001)
            trainer._step = 140
            [path] = await manager.final_save()
            tg.cancel_scope.cancel()
    assert manager.max_in_flight["Counter"] == 1
    assert [s for _, s, _ in manager.saves] == [100, 140]
    assert path == tmp_path / "run" / "Counter" / "checkpoints" / "Counter-140"
    assert PolicySnapshot.load(tmp_path / "run" / "Counter.npz").step == 140


async def test_keep_checkpoints_prunes_the_oldest_with_their_onnx_and_the_status_lists_the_kept(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    bdir = run / "Counter"
    trainer = make_trainer()  # keep_checkpoints: 3
    manager = CheckpointManager(run)
    manager.attach(trainer)
    for step in (100, 200, 300, 400, 500):
        trainer._step = step
        await manager.save(trainer)
        kept = [c.step for c in list_checkpoints(bdir / "checkpoints")]
        assert kept == [s for s in (100, 200, 300, 400, 500) if s <= step][-3:]
        assert sorted(p.name for p in bdir.glob("*.onnx")) == [f"Counter-{s}.onnx" for s in kept]
        entries = status_of(run)["Counter"]["checkpoints"]
        assert [e["steps"] for e in entries] == kept
        assert [e["file_path"] for e in entries] == [str(bdir / f"Counter-{s}.onnx") for s in kept]
        assert [e["auxillary_file_paths"][0] for e in entries] == [
            str(bdir / "checkpoints" / f"Counter-{s}") for s in kept
        ]
    trainer._step = 560
    await manager.final_save()
    assert [c.step for c in list_checkpoints(bdir / "checkpoints")] == [400, 500, 560]
    assert sorted(p.name for p in bdir.glob("*.onnx")) == ["Counter-400.onnx", "Counter-500.onnx", "Counter-560.onnx"]
    status = status_of(run)
    assert [e["steps"] for e in status["Counter"]["checkpoints"]] == [400, 500, 560]
    final = status["Counter"]["final_checkpoint"]
    assert final["steps"] == 560 and final["file_path"] == str(run / "Counter.onnx")
    assert final["auxillary_file_paths"] == [str(bdir / "checkpoints" / "Counter-560"), str(run / "Counter.npz")]
    assert (run / "Counter.onnx").read_bytes() == (bdir / "Counter-560.onnx").read_bytes()
    assert PolicySnapshot.load(run / "Counter.npz").step == 560
    assert temporaries(run) == []


async def test_the_status_is_healed_after_a_crash_between_commit_and_status(tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer = make_trainer()
    manager = CheckpointManager(run, export_onnx=False)
    manager.attach(trainer)
    await manager.save(trainer)
    # A checkpoint committed by a run that was killed before it rewrote the status file, plus
    # an .onnx whose checkpoint was pruned by a run killed midway.
    write_checkpoint(run / "Counter" / "checkpoints", "Counter", 150, {"state.npz": lambda p: p.write_bytes(b"")}, {})
    (run / "Counter" / "Counter-50.onnx").write_bytes(b"orphan")
    resumed = CheckpointManager(run, export_onnx=False, resume=True)
    resumed.attach(trainer)
    trainer._step = 200
    await resumed.save(trainer)
    assert [e["steps"] for e in status_of(run)["Counter"]["checkpoints"]] == [100, 150, 200]
    assert not (run / "Counter" / "Counter-50.onnx").exists()


async def test_a_save_that_fails_before_its_commit_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer = make_trainer()
    manager = CheckpointManager(run)
    manager.attach(trainer)
    await manager.save(trainer)
    status_before = (run / "run_logs" / "training_status.json").read_bytes()
    listing_before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))

    def crash() -> None:
        raise RuntimeError("injected crash before the manifest")

    manager.fail_before_commit = crash
    trainer._step = 200
    with pytest.raises(CheckpointSaveError) as info:
        await manager.save(trainer)
    assert "Counter-200" in str(info.value) and "injected crash" in str(info.value)
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == listing_before
    assert (run / "run_logs" / "training_status.json").read_bytes() == status_before
    assert temporaries(run) == []
    newest = find_checkpoint(run / "Counter", "Counter")
    assert newest.name == "Counter-100"
    assert int(load_checkpoint_state(newest)["trainer/step"][0]) == 100


async def test_a_checkpoint_reads_the_loop_side_fields_at_the_moment_it_starts(tmp_path: Path) -> None:
    trainer = make_trainer()
    trainer._reward_buffer.appendleft(1.0)
    in_thread, release = threading.Event(), threading.Event()
    thread_state = trainer._algorithm_state

    def slow_algorithm_state() -> dict[str, np.ndarray]:
        in_thread.set()
        assert release.wait(10)
        return thread_state()

    trainer._algorithm_state = slow_algorithm_state  # type: ignore[method-assign]
    manager = CheckpointManager(tmp_path / "run", export_onnx=False)
    manager.attach(trainer)
    paths: list[Path] = []

    async def save() -> None:
        paths.append(await manager.save(trainer))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(save)
            await anyio.to_thread.run_sync(in_thread.wait)
            # The loop goes on while the worker thread captures the weights.
            trainer._step += 7
            trainer._episodes += 1
            trainer._reward_buffer.appendleft(9.0)
            release.set()
    [path] = paths
    state = load_checkpoint_state(path)
    # The weights and the loop-side fields are of one moment: the one the capture began at.
    assert path.name == "Counter-100"
    assert int(state["trainer/step"][0]) == 100 and int(state["trainer/episodes"][0]) == 0
    assert state["trainer/reward_buffer"].tolist() == [1.0]
    assert PolicySnapshot.load(path / "snapshot.npz").step == 100


async def test_a_failing_periodic_save_is_logged_counted_and_training_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    factory = fake_factory()
    runner = runner_for(tmp_path, factory, max_steps=600)
    attempts: list[int] = []

    def crash_the_second() -> None:
        attempts.append(1)
        if len(attempts) == 2:
            raise RuntimeError("injected crash before the manifest")

    with caplog.at_level("ERROR", logger="asynctrainer"), anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(arm, runner, crash_the_second)
            result = await runner.run()
    manager = runner.checkpoints
    assert isinstance(manager, CheckpointManager)
    trainer = factory.made[0]  # type: ignore[attr-defined]
    assert result.steps["Counter"] > 600 and not result.stopped_early
    assert manager.failed_saves == {"Counter": 1}
    # One line naming the behavior, the step and the error.
    [line] = [r.getMessage() for r in caplog.records if "was not saved" in r.getMessage()]
    first_committed = manager.saves[0][1]  # saves lists the committed ones: the first came before
    assert line.startswith("Counter: the checkpoint at step ") and "injected crash" in line
    step_in_line = int(line.split("step ")[1].split(" ")[0].rstrip(";"))
    assert step_in_line > first_committed
    # Counted in the stats, and later intervals (and the final save) saved again.
    recorded = [
        r.values[FAILED_SAVES_STAT].mean for r in trainer.stats_reporter.history if FAILED_SAVES_STAT in r.values
    ]
    assert recorded == [1.0]
    committed = [c.step for c in list_checkpoints(tmp_path / "run" / "Counter" / "checkpoints")]
    assert step_in_line not in committed and len(committed) >= 3 and committed[-1] == result.steps["Counter"]
    assert_final_model(tmp_path / "run", result.steps["Counter"])


async def test_a_failing_final_save_fails_the_run_and_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    factory = fake_factory()
    runner = runner_for(tmp_path, factory, max_steps=300)

    def crash_once_trained() -> None:
        if not factory.made[0].should_still_train:  # type: ignore[attr-defined]
            raise RuntimeError("injected crash in the final save")

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(arm, runner, crash_once_trained)
            # Raised alone (not in an exception group); the CLI exits 1 for it.
            with pytest.raises(CheckpointSaveError, match="injected crash in the final save") as info:
                await runner.run()
    assert info.value.exit_code == 1
    run = tmp_path / "run"
    committed = list_checkpoints(run / "Counter" / "checkpoints")
    assert committed and all(c.step <= 300 for c in committed)
    for c in committed:
        read_manifest(c.path)
    assert temporaries(run) == []
    assert not (run / "Counter.onnx").exists()
    # A resume starts from the previous checkpoint, whole.
    previous = committed[-1]
    resumed_factory = fake_factory()
    resumed = Runner(
        make_run_settings(max_steps=previous.step - 1),  # not increased: restore only, no training
        CountingEnv(),
        results_dir=tmp_path,
        run_id="run",
        trainer_factory=resumed_factory,
        stats_writers=[],
        resume=True,
    )
    result = await resumed.run()
    trainer = resumed_factory.made[0]  # type: ignore[attr-defined]
    assert trainer.restored_weights_only is False
    assert result.steps["Counter"] == previous.step
    np.testing.assert_array_equal(trainer.weights, load_checkpoint_state(previous.path)["algo/weights/w"])


async def arm(runner: Runner, fail_before_commit: Callable[[], None]) -> None:
    """Install the manager's crash hook as soon as the run opened its checkpoints."""
    while runner.checkpoints is None:
        await anyio.sleep(0)
    runner.checkpoints.fail_before_commit = fail_before_commit  # type: ignore[attr-defined]


def runner_for(tmp_path: Path, factory: Any, max_steps: int = 10**6, **kwargs: Any) -> Runner:
    settings = make_run_settings(max_steps=max_steps, checkpoint_interval=40, keep_checkpoints=3)
    env = CountingEnv(step_delay=0.001)
    return Runner(
        settings, env, results_dir=tmp_path, run_id="run", trainer_factory=factory, stats_writers=[], **kwargs
    )


def assert_final_model(run: Path, step: int) -> None:
    final_ckpt = run / "Counter" / "checkpoints" / f"Counter-{step}"
    assert list_checkpoints(run / "Counter" / "checkpoints")[-1].path == final_ckpt
    read_manifest(final_ckpt)
    assert int(load_checkpoint_state(final_ckpt)["trainer/step"][0]) == step
    assert (run / "Counter.onnx").is_file()
    assert PolicySnapshot.load(run / "Counter.npz").step == step
    final = status_of(run)["Counter"]["final_checkpoint"]
    assert final["steps"] == step and final["file_path"] == str(run / "Counter.onnx")
    assert temporaries(run) == []


async def test_cancelling_run_still_writes_the_final_model(tmp_path: Path) -> None:
    factory = fake_factory(update_seconds=0.01)
    runner = runner_for(tmp_path, factory)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            while not factory.made or factory.made[0].step < 150:  # type: ignore[attr-defined]
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    trainer = factory.made[0]  # type: ignore[attr-defined]
    assert runner.result is None  # cancelled: no result, but the model is saved
    assert_final_model(tmp_path / "run", trainer.step)


async def test_stop_writes_the_final_model(tmp_path: Path) -> None:
    factory = fake_factory(update_seconds=0.01)
    runner = runner_for(tmp_path, factory)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            while not factory.made or factory.made[0].step < 150:  # type: ignore[attr-defined]
                await anyio.sleep(0.01)
            runner.stop()
    result = runner.result
    assert result is not None and result.stopped_early
    step = result.steps["Counter"]
    assert_final_model(tmp_path / "run", step)
    assert tmp_path / "run" / "Counter" / "checkpoints" / f"Counter-{step}" in result.paths


async def test_a_normal_end_writes_the_final_model_and_resume_is_exact(tmp_path: Path) -> None:
    factory = fake_factory()
    result = await runner_for(tmp_path, factory, max_steps=200).run()
    trainer = factory.made[0]  # type: ignore[attr-defined]
    step = result.steps["Counter"]
    assert step > 200
    assert_final_model(tmp_path / "run", step)
    resumed_factory = fake_factory()
    resumed = runner_for(tmp_path, resumed_factory, max_steps=200, resume=True)
    again = await resumed.run()
    restored = resumed_factory.made[0]  # type: ignore[attr-defined]
    assert again.steps["Counter"] == step and again.updates["Counter"] == result.updates["Counter"]
    assert restored.updates_finished == 0
    assert list(restored.reward_buffer) == list(trainer.reward_buffer)
    original, copy = trainer.get_state(), restored.get_state()
    assert original.keys() == copy.keys()
    for key in original:
        np.testing.assert_array_equal(copy[key], original[key], err_msg=key)


async def test_resume_without_a_checkpoint_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointLoadError) as info:
        await runner_for(tmp_path, fake_factory(), resume=True).run()
    assert str(tmp_path / "run" / "Counter" / "checkpoints") in str(info.value)


async def test_a_corrupt_only_checkpoint_says_to_start_over(tmp_path: Path) -> None:
    run = tmp_path / "run"
    manager = CheckpointManager(run, export_onnx=False)
    trainer = make_trainer()
    manager.attach(trainer)
    path = await manager.save(trainer)
    (path / "snapshot.npz").unlink()
    with pytest.raises(CheckpointLoadError) as info:
        find_checkpoint(run / "Counter", "Counter")
    assert info.value.path == str(path / "snapshot.npz")
    assert str(path / "snapshot.npz") in str(info.value) and "--force" in str(info.value)

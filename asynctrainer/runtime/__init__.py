"""The runtime: channels, policy slots and snapshots, the trainer contract, env loops, the Runner.

Nothing here imports TensorFlow or anything above the runtime (the algorithms, checkpoints,
executors): the Runner receives those through the protocols of ``runtime/contracts.py``.
Names are imported lazily, on first use.
"""

from __future__ import annotations

from asynctrainer.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ActOutput": "asynctrainer.runtime.snapshot",
    "AgentProcessor": "asynctrainer.runtime.agent_processor",
    "BehaviorLink": "asynctrainer.runtime.env_loop",
    "ChannelStatistics": "asynctrainer.runtime.channels",
    "CheckpointBackend": "asynctrainer.runtime.contracts",
    "Checkpointer": "asynctrainer.runtime.contracts",
    "ConsoleWriter": "asynctrainer.runtime.stats",
    "EnvExecutor": "asynctrainer.runtime.contracts",
    "EnvJob": "asynctrainer.runtime.contracts",
    "EnvLoopStats": "asynctrainer.runtime.env_loop",
    "LocalExecutor": "asynctrainer.runtime.local_executor",
    "PolicySlot": "asynctrainer.runtime.policy_slot",
    "PolicySnapshot": "asynctrainer.runtime.snapshot",
    "RLTrainer": "asynctrainer.runtime.trainer",
    "RestoreRequest": "asynctrainer.runtime.contracts",
    "RunResult": "asynctrainer.runtime.runner",
    "Runner": "asynctrainer.runtime.runner",
    "StatsReporter": "asynctrainer.runtime.stats",
    "StatsSummaryRecord": "asynctrainer.runtime.stats",
    "StatsWriter": "asynctrainer.runtime.stats",
    "TensorboardWriter": "asynctrainer.runtime.stats",
    "TimerTree": "asynctrainer.runtime.timers",
    "Trainer": "asynctrainer.runtime.trainer",
    "TrainerContext": "asynctrainer.runtime.contracts",
    "TrainerFactory": "asynctrainer.runtime.contracts",
    "Trajectory": "asynctrainer.runtime.trajectory",
    "TrajectorySender": "asynctrainer.runtime.channels",
    "decayed_value": "asynctrainer.runtime.schedules",
    "hierarchical_timer": "asynctrainer.runtime.timers",
    "open_trajectory_channel": "asynctrainer.runtime.channels",
    "run_env_loop": "asynctrainer.runtime.env_loop",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

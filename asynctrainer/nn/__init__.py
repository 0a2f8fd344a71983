"""TensorFlow building blocks: TensorFlow's set-up, networks, the observation normaliser, graph loops,
and the save/restore of what an algorithm learns.

TensorFlow is imported only when a name that needs it is used.
"""

from __future__ import annotations

from asynctrainer.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "ActorCritic": "asynctrainer.nn.networks",
    "LearnedState": "asynctrainer.nn.state",
    "Normalizer": "asynctrainer.nn.normalizer",
    "keras": "asynctrainer.nn.tf_setup",
    "mlp": "asynctrainer.nn.networks",
    "sum_over_range": "asynctrainer.nn.graph_loops",
    "tf": "asynctrainer.nn.tf_setup",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

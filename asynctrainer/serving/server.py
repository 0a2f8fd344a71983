"""Inference-only serving: the GameSession API over a trained policy, without TensorFlow.

A game server that only plays (no training) serves a policy exported by a run::

    async with PolicyServer("results/run/Walker.onnx") as server:     # or a PolicySnapshot .npz
        action = await server.decide(agent_id, obs)
        ...
        server.publish(PolicySnapshot.load("newer.npz"))               # swapped between two batches

``PolicyServer`` offers :meth:`~PolicyServer.decide`, :meth:`~PolicyServer.decide_batch` and
:meth:`~PolicyServer.leave` exactly as :class:`~asynctrainer.envs.game_session.GameSession`
does, with the same validation and the same micro-batching (``max_batch``, ``max_wait_ms``):
concurrent ``decide()`` calls are gathered into one forward pass, run by one serving task on
the caller's loop. Rewards are accepted (so host code is the same whether it trains or not)
and ignored; episode ends matter only to a policy with memory, whose agents each keep their
memory from one decision to the next until their episode ends or they leave.

A policy comes from :meth:`PolicySnapshot.load` (an ``.npz``: numpy only) or from an ``.onnx``
file with ML-Agents' tensor names (``obs_0``…, ``action_masks`` in, ``recurrent_in`` when it has memory;
``[deterministic_]continuous_actions``, ``[deterministic_]discrete_actions``, ``recurrent_out`` out), run with
onnxruntime. Importing this module imports neither TensorFlow nor onnxruntime.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from asynctrainer.envs.game_session import AgentAction, GameSession, SessionStats
from asynctrainer.envs.spec import ActionBatch, ActionSpec, BehaviorSpec, ObservationSpec, StepBatch
from asynctrainer.errors import EnvError, SpecError
from asynctrainer.export.onnx_acting import accelerate
from asynctrainer.runtime.snapshot import CONTINUOUS_CLIP, MASK_PENALTY, PolicySnapshot

__all__ = [
    "OnnxPolicy",
    "Policy",
    "PolicyServer",
    "RecurrentPolicy",
    "SnapshotPolicy",
    "check_snapshot",
    "load_policy",
]

logger = logging.getLogger("asynctrainer")

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]


@runtime_checkable
class Policy(Protocol):
    """What a PolicyServer needs of a policy: its spec and a batched forward pass.

    ``act`` takes one float32 array ``[n, *shape]`` per observation spec and an allowed-action
    mask ``[n, sum(branches)]`` (1 = allowed) or None, and returns ``(continuous [n, c] in
    [-1, 1], discrete int32 [n, branches])``.
    """

    @property
    def behavior_name(self) -> str: ...

    @property
    def behavior_spec(self) -> BehaviorSpec: ...

    def act(
        self, obs: list[F32], allowed: F32 | None, *, deterministic: bool, rng: np.random.Generator
    ) -> tuple[F32, I32]: ...


@runtime_checkable
class RecurrentPolicy(Policy, Protocol):
    """A :class:`Policy` with memory: PolicyServer keeps each agent's memory ``[memory_size]`` between its
    decisions (zeros for a new agent, dropped when its episode ends or it leaves) and passes it in.

    A class deriving from it gets :meth:`act` (every agent from zero memory) from its ``act_with_memory``.
    """

    @property
    def memory_size(self) -> int: ...

    def act_with_memory(
        self,
        obs: list[F32],
        allowed: F32 | None,
        memories: F32 | None,
        *,
        deterministic: bool,
        rng: np.random.Generator,
    ) -> tuple[F32, I32, F32]: ...

    def act(
        self, obs: list[F32], allowed: F32 | None, *, deterministic: bool, rng: np.random.Generator
    ) -> tuple[F32, I32]:
        cont, disc, _ = self.act_with_memory(obs, allowed, None, deterministic=deterministic, rng=rng)
        return cont, disc


class SnapshotPolicy(RecurrentPolicy):
    """A :class:`PolicySnapshot` as a :class:`Policy`.

    The forward pass is the snapshot's (dense layers ``x @ W + b``, tanh, masked
    softmax, clipped Gaussian), trimmed for serving: no log-probabilities or entropies, the
    standard deviations computed once. Deterministic actions equal ``snapshot.act``'s exactly;
    sampled ones follow the same distribution.
    """

    def __init__(self, snapshot: PolicySnapshot) -> None:
        check_snapshot(snapshot)
        self.snapshot = accelerate(snapshot)  # images through onnxruntime, when installed
        spec = snapshot.action_spec
        self._std = None if snapshot.log_std is None else np.exp(snapshot.log_std).astype(np.float32)
        self._branches = spec.discrete_branches
        self._size = snapshot.behavior_spec.observation_size

    @property
    def behavior_name(self) -> str:
        return self.snapshot.behavior_name

    @property
    def behavior_spec(self) -> BehaviorSpec:
        return self.snapshot.behavior_spec

    @property
    def version(self) -> int:
        return self.snapshot.version

    @property
    def memory_size(self) -> int:
        return self.snapshot.memory_size

    def act_with_memory(
        self,
        obs: list[F32],
        allowed: F32 | None,
        memories: F32 | None,
        *,
        deterministic: bool,
        rng: np.random.Generator,
    ) -> tuple[F32, I32, F32]:
        """As :meth:`act`, from each agent's memory ``[n, memory_size]`` (None: zeros); also returns the new ones."""
        s = self.snapshot
        n = obs[0].shape[0]
        x = obs[0].reshape(n, -1) if len(obs) == 1 else np.concatenate([o.reshape(n, -1) for o in obs], axis=1)
        if x.shape[1] != self._size:
            raise SpecError(
                f"Behavior '{s.behavior_name}' expects observations of total size {self._size}, got {x.shape[1]}."
            )
        h, new_memories = s.features(x, memories)
        cont: F32
        if s.continuous_head is not None and self._std is not None:
            cont = h @ s.continuous_head.kernel
            cont += s.continuous_head.bias
            if not deterministic:
                cont += self._std * rng.standard_normal(cont.shape, dtype=np.float32)
            if s.tanh_squash:
                np.tanh(cont, out=cont)
            else:
                np.clip(cont, -CONTINUOUS_CLIP, CONTINUOUS_CLIP, out=cont)
                cont /= CONTINUOUS_CLIP
        else:
            cont = np.zeros((n, 0), np.float32)
        disc = np.zeros((n, len(self._branches)), np.int32)
        if s.discrete_head is not None:
            logits = h @ s.discrete_head.kernel
            logits += s.discrete_head.bias
            if allowed is not None:
                logits = logits * allowed - MASK_PENALTY * (1.0 - allowed)
            start = 0
            rows = np.arange(n)
            for b, size in enumerate(self._branches):
                part = logits[:, start : start + size]
                start += size
                if deterministic:
                    disc[:, b] = part.argmax(axis=1)
                    continue
                probs = np.exp(part - part.max(axis=1, keepdims=True))
                cdf = np.cumsum(probs, axis=1)
                u = rng.random((n, 1), dtype=np.float32)
                idx = np.minimum((cdf < u * cdf[:, -1:]).sum(axis=1), size - 1)
                bad = probs[rows, idx] <= 0.0  # never a masked action, even at the cdf's edge
                if bad.any():
                    idx[bad] = probs[bad].argmax(axis=1)
                disc[:, b] = idx
        return cont, disc, np.zeros((n, 0), np.float32) if new_memories is None else new_memories


def check_snapshot(snapshot: PolicySnapshot) -> None:
    """Check that ``snapshot``'s weights fit the network its spec describes, and are finite.

    The network: hidden layers ``[obs_size → u_0 → … → u_k]`` (kernels ``[in, out]``, biases
    ``[out]``), a discrete head ``[u_k → sum(branches)]`` when the spec has discrete actions,
    a continuous head ``[u_k → continuous_size]`` and ``log_std [continuous_size]`` when it has
    continuous ones, and optional ``obs_mean`` / ``obs_std [obs_size]`` (``obs_std`` > 0).

    :raises SpecError: naming the first array that does not fit (its shape and the expected
        one), is missing, or holds NaN or infinite values.
    """
    whose = f"PolicyServer: the policy snapshot of behavior '{snapshot.behavior_name}'"
    spec = snapshot.behavior_spec
    a = spec.action_spec
    obs_size = spec.observation_size

    def fits(name: str, array: Any, expected: tuple[int, ...], why: str) -> npt.NDArray[Any]:
        arr = np.asarray(array)
        if arr.shape != expected:
            raise SpecError(
                f"{whose} does not fit its network: {name} has shape {arr.shape}, expected {expected} ({why})."
            )
        if arr.dtype.kind not in "biuf":
            raise SpecError(f"{whose} does not fit its network: {name} has dtype {arr.dtype}; weights are floats.")
        bad = int((~np.isfinite(arr)).sum())
        if bad:
            raise SpecError(
                f"{whose} is not finite: {name} holds {bad} NaN or infinite values; every weight must be finite."
            )
        return arr

    try:
        width = snapshot.feature_width()
    except ValueError as exc:
        raise SpecError(f"{whose} does not fit its network: an observation encoder fails on its input: {exc}") from exc
    for i, layer in enumerate(snapshot.hidden):
        kernel = np.asarray(layer.kernel)
        if kernel.ndim != 2:
            raise SpecError(
                f"{whose} does not fit its network: hidden_{i}/kernel has shape {kernel.shape}; "
                f"kernels are 2-D [inputs, units] (expected ({width}, units))."
            )
        units = int(kernel.shape[1])
        fits(f"hidden_{i}/kernel", kernel, (width, units), f"rows: the size {width} of its input")
        fits(f"hidden_{i}/bias", layer.bias, (units,), f"one per unit of hidden_{i}/kernel")
        width = units
    width, problem = snapshot.heads_width(width)
    if problem:
        raise SpecError(f"{whose} does not fit its network: {problem}.")
    heads = (
        ("discrete_head", snapshot.discrete_head, a.mask_size, "the discrete branches' actions"),
        ("continuous_head", snapshot.continuous_head, a.continuous_size, "the continuous actions"),
    )
    for name, head, size, what in heads:
        if size and head is None:
            raise SpecError(f"{whose} does not fit its network: {name} is missing, but the spec has {what}.")
        if not size and head is not None:
            raise SpecError(f"{whose} does not fit its network: it has a {name}, but the spec has no {what}.")
        if head is not None:
            fits(f"{name}/kernel", head.kernel, (width, size), f"the last layer's {width} units by {size} {what}")
            fits(f"{name}/bias", head.bias, (size,), f"one per action of {what}")
    if a.continuous_size:
        if snapshot.log_std is None:
            raise SpecError(
                f"{whose} does not fit its network: log_std is missing, but the spec has continuous actions."
            )
        log_std = fits("log_std", snapshot.log_std, (a.continuous_size,), "one per continuous action")
        with np.errstate(over="ignore"):
            if not np.isfinite(np.exp(log_std.astype(np.float32))).all():
                raise SpecError(f"{whose} is not finite: exp(log_std) overflows float32 (log_std max {log_std.max()}).")
    if (snapshot.obs_mean is None) != (snapshot.obs_std is None):
        raise SpecError(f"{whose} does not fit its network: it has only one of obs_mean and obs_std (both or neither).")
    if snapshot.obs_mean is not None and snapshot.obs_std is not None:
        fits("obs_mean", snapshot.obs_mean, (obs_size,), f"the observation size {obs_size}")
        std = fits("obs_std", snapshot.obs_std, (obs_size,), f"the observation size {obs_size}")
        if not (std > 0).all():
            raise SpecError(f"{whose} is not usable: obs_std must be > 0, got {float(std.min())} at least once.")
    for name, array in snapshot.weights().items():  # encoders, attention, LSTM: every array finite
        bad = int((~np.isfinite(array)).sum())
        if bad:
            raise SpecError(
                f"{whose} is not finite: {name} holds {bad} NaN or infinite values; every weight must be finite."
            )


class OnnxPolicy(RecurrentPolicy):
    """An ML-Agents-style ``.onnx`` policy run with onnxruntime (CPU).

    The behavior spec is read from the model: observation shapes from the ``obs_<i>`` inputs
    (a rank-4 input ``[batch, C, H, W]`` is an ``(H, W, C)`` observation, as ML-Agents exports
    visual observations), action sizes from the ``continuous_action_output_shape`` and
    ``discrete_action_output_shape`` constants.

    :param behavior_name: defaults to the file name without ``.onnx`` and without a trailing
        ``-<step>`` (``Walker-5000.onnx`` → ``Walker``).
    :raises EnvError: onnxruntime is missing, or the file is not such a model.
    :raises SpecError: its weights are not finite, or it does not run on a zero observation.
    """

    def __init__(self, path: str | os.PathLike[str], behavior_name: str | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise EnvError(
                "Serving an .onnx policy needs onnxruntime: pip install 'asynctrainer[export]' "
                "(or serve a PolicySnapshot .npz, which needs numpy only)."
            ) from exc
        self.path = Path(path)
        if behavior_name is None:
            stem = self.path.stem
            head, _, tail = stem.rpartition("-")
            behavior_name = head if head and tail.isdigit() else stem
        self._name = behavior_name
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise EnvError(f"Could not load the ONNX policy {self.path}: {exc}") from exc
        inputs = {i.name: i for i in self.session.get_inputs()}
        obs_names = sorted((n for n in inputs if n.startswith("obs_")), key=lambda n: int(n[4:]))
        if not obs_names:
            raise EnvError(
                f"{self.path} has no obs_0 input; inputs are {sorted(inputs)} (ML-Agents 2.x tensor names expected)."
            )
        self._obs_names = obs_names
        self._visual: list[bool] = []
        obs_specs = []
        for name in obs_names:
            dims = inputs[name].shape[1:]
            if not all(isinstance(d, int) for d in dims):
                raise EnvError(f"{self.path}: input {name} has a non-fixed shape {inputs[name].shape}.")
            shape = tuple(int(d) for d in dims)
            visual = len(shape) == 3
            self._visual.append(visual)
            obs_specs.append(ObservationSpec((shape[1], shape[2], shape[0]) if visual else shape, name))
        self._mask_size = 0
        if "action_masks" in inputs:
            dims = inputs["action_masks"].shape
            self._mask_size = int(dims[1]) if len(dims) == 2 and isinstance(dims[1], int) else 1
        self._memory_input = "recurrent_in" in inputs
        outputs = {o.name for o in self.session.get_outputs()}
        consts = [
            n for n in ("memory_size", "continuous_action_output_shape", "discrete_action_output_shape") if n in outputs
        ]
        memory_dims = inputs["recurrent_in"].shape if self._memory_input else [None, 1, 0]
        self._memory_size = int(memory_dims[2]) if len(memory_dims) == 3 and isinstance(memory_dims[2], int) else 0
        zeros = [np.zeros((1, *s.shape), np.float32) for s in obs_specs]
        try:
            values = dict(zip(consts, self._run(consts, zeros, None), strict=True))
        except Exception as exc:
            raise EnvError(f"Could not read the action spec of the ONNX policy {self.path}: {exc}") from exc
        declared = int(np.asarray(values.get("memory_size", [0])).reshape(-1)[0])
        if declared != self.memory_size or (declared and "recurrent_out" not in outputs):
            raise EnvError(
                f"{self.path} declares memory_size {declared}, its recurrent_in input has {self.memory_size} and "
                f"recurrent_out is {'present' if 'recurrent_out' in outputs else 'missing'}; a policy with memory "
                "has both, of its memory_size."
            )
        continuous = int(np.asarray(values.get("continuous_action_output_shape", [0])).reshape(-1)[0])
        branches = tuple(int(b) for b in np.asarray(values.get("discrete_action_output_shape", [])).reshape(-1))
        self._spec = BehaviorSpec(tuple(obs_specs), ActionSpec(continuous, branches))
        self._outputs = outputs
        self._check_weights()
        self._probe(zeros)

    def _check_weights(self) -> None:
        """:raises SpecError: a weight (initializer or constant) holds NaN or infinite values.

        Needs the ``onnx`` package (the ``export`` extra); without it only :meth:`_probe` runs.
        """
        try:
            import onnx
            from onnx import numpy_helper
        except ImportError:  # pragma: no cover - depends on the install
            return
        try:
            model = onnx.load(str(self.path), load_external_data=False)
        except Exception as exc:
            raise EnvError(f"Could not read the weights of the ONNX policy {self.path}: {exc}") from exc
        tensors = [(t.name, t) for t in model.graph.initializer]
        for node in model.graph.node:
            if node.op_type == "Constant":
                tensors.extend((node.output[0], attr.t) for attr in node.attribute if attr.name == "value")
        for name, tensor in tensors:
            values = numpy_helper.to_array(tensor)
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                bad = int((~np.isfinite(values)).sum())
                raise SpecError(
                    f"PolicyServer: the ONNX policy {self.path}: weight '{name}' holds {bad} NaN or infinite "
                    "values; every weight must be finite."
                )

    def _probe(self, zeros: list[F32]) -> None:
        """Run the model once on a zero observation: its weights fit its graph and give finite actions.

        :raises SpecError: the forward pass fails (e.g. a weight of another shape) or returns NaN.
        """
        for deterministic in (True, False):
            try:
                cont, _ = self.act(zeros, None, deterministic=deterministic, rng=np.random.default_rng(0))
            except Exception as exc:
                raise SpecError(
                    f"PolicyServer: the ONNX policy {self.path} does not run on one zero observation "
                    f"({type(exc).__name__}: {exc}); its weights do not fit its graph."
                ) from None
            if not np.isfinite(cont).all():
                raise SpecError(
                    f"PolicyServer: the ONNX policy {self.path} gives NaN or infinite actions for a zero "
                    "observation; its weights are not finite."
                )

    @property
    def behavior_name(self) -> str:
        return self._name

    @property
    def memory_size(self) -> int:
        """``recurrent_in``'s width (0 for a model without memory)."""
        return self._memory_size

    @property
    def behavior_spec(self) -> BehaviorSpec:
        return self._spec

    def _run(self, names: list[str], obs: list[F32], allowed: F32 | None, memories: F32 | None = None) -> list[Any]:
        n = obs[0].shape[0]
        feeds: dict[str, Any] = {}
        for name, visual, o in zip(self._obs_names, self._visual, obs, strict=True):
            o = np.asarray(o, np.float32)
            feeds[name] = np.ascontiguousarray(o.transpose(0, 3, 1, 2)) if visual else o
        if self._mask_size:
            feeds["action_masks"] = allowed if allowed is not None else np.ones((n, self._mask_size), np.float32)
        if self._memory_input:
            memory = np.zeros((n, self.memory_size), np.float32) if memories is None else memories
            feeds["recurrent_in"] = np.ascontiguousarray(memory.reshape(n, 1, self.memory_size), np.float32)
        return list(self.session.run(names, feeds))

    def act_with_memory(
        self,
        obs: list[F32],
        allowed: F32 | None,
        memories: F32 | None,
        *,
        deterministic: bool,
        rng: np.random.Generator,
    ) -> tuple[F32, I32, F32]:
        """As :meth:`act`, feeding ``recurrent_in`` (None: zeros); also returns ``recurrent_out`` as ``[n, m]``."""
        a = self._spec.action_spec
        n = obs[0].shape[0]
        prefix = "deterministic_" if deterministic else ""
        names = ["recurrent_out"] if self.memory_size else []
        if a.is_continuous():
            names.append(f"{prefix}continuous_actions")
        if a.is_discrete():
            names.append(f"{prefix}discrete_actions")
        results = self._run(names, obs, allowed, memories)
        new_memories = (
            np.asarray(results.pop(0), np.float32).reshape(n, self.memory_size)
            if self.memory_size
            else np.zeros((n, 0), np.float32)
        )
        cont = np.zeros((n, a.continuous_size), np.float32)
        disc = np.zeros((n, a.discrete_size), np.int32)
        if a.is_continuous():
            cont = np.asarray(results.pop(0), np.float32).reshape(n, a.continuous_size)
        if a.is_discrete():
            disc = np.asarray(results.pop(0)).reshape(n, a.discrete_size).astype(np.int32)
        return cont, disc, new_memories


PolicySource = PolicySnapshot | Policy | str | os.PathLike[str]


def load_policy(source: PolicySource, behavior_name: str | None = None) -> Policy:
    """A :class:`Policy` from a snapshot, a Policy, or a path (``.onnx`` → onnxruntime, else ``.npz`` snapshot).

    :raises EnvError: the file is missing or unreadable.
    :raises SpecError: a snapshot's or model's weights do not fit its network or are not finite
        (see :func:`check_snapshot`). A :class:`Policy` of your own is taken as it is.
    """
    if isinstance(source, PolicySnapshot):
        return SnapshotPolicy(source)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise EnvError(f"No policy file at {path}.")
        if path.suffix.lower() == ".onnx":
            return OnnxPolicy(path, behavior_name)
        try:
            snapshot = PolicySnapshot.load(path)
        except Exception as exc:
            raise EnvError(f"Could not load the policy snapshot {path}: {type(exc).__name__}: {exc}") from exc
        return SnapshotPolicy(snapshot)  # its weights are checked: a SpecError naming the array
    if isinstance(source, Policy):
        return source
    raise EnvError(f"Cannot serve a {type(source).__name__}: give a PolicySnapshot, a Policy or a file path.")


def memory_size_of(policy: Policy) -> int:
    """The width of an agent's memory for ``policy`` (0 for a feed-forward one)."""
    return policy.memory_size if isinstance(policy, RecurrentPolicy) else 0


def _same_interface(a: Policy, b: Policy) -> bool:
    x, y = a.behavior_spec, b.behavior_spec
    same_obs = [o.shape for o in x.observation_specs] == [o.shape for o in y.observation_specs]
    return x.action_spec == y.action_spec and same_obs and memory_size_of(a) == memory_size_of(b)


class PolicyServer:
    """Micro-batched inference over one policy per behavior, with GameSession's API.

    :param policies: one policy source (a :class:`PolicySnapshot`, a :class:`Policy`, or the
        path of an ``.npz`` snapshot or ``.onnx`` model), or a mapping behavior name → source.
        A single source serves the behavior named by the policy.
    :param max_batch: the most decisions in one forward pass.
    :param max_wait_ms: the longest a decision waits for others to share its forward pass
        (see :class:`GameSession` for when a batch closes earlier).
    :param deterministic: take the mode of the action distribution (mean / argmax) instead of
        sampling. ML-Agents samples by default; so does this.
    :param seed: seeds the sampling generator (snapshot policies).

    Start it with ``async with PolicyServer(...) as server`` (or ``await server.start()`` and
    ``await server.aclose()``); a ``decide()`` on a server not started starts it.
    """

    def __init__(
        self,
        policies: PolicySource | Mapping[str, PolicySource],
        *,
        max_batch: int = 1024,
        max_wait_ms: float = 1.0,
        deterministic: bool = False,
        seed: int | None = None,
    ) -> None:
        loaded: dict[str, Policy] = {}
        if isinstance(policies, Mapping):
            for name, source in policies.items():
                loaded[name] = load_policy(source, name)
        else:
            policy = load_policy(policies)
            loaded[policy.behavior_name] = policy
        if not loaded:
            raise SpecError("PolicyServer needs at least one policy.")
        self._policies = loaded
        self.deterministic = deterministic
        self._rng = np.random.default_rng(seed)
        self._session = GameSession(
            {name: p.behavior_spec for name, p in loaded.items()}, max_batch=max_batch, max_wait_ms=max_wait_ms
        )
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        #: behaviors whose policy failed on its last batches, and on how many in a row
        self._failing: dict[str, int] = {}
        #: per behavior with memory, each agent's memory after its last decision
        self._memories: dict[str, dict[int, F32]] = {}

    # ----- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the serving task on the running loop (idempotent)."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._task is None:
            self._session.check_open()
            self._task = asyncio.get_running_loop().create_task(self._serve(), name="asynctrainer-policy-server")

    async def aclose(self) -> None:
        """Stop serving: decisions still waiting fail with :class:`EnvError`."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if (current := asyncio.current_task()) is not None and current.cancelling():
                    raise
        await self._session.aclose()

    async def __aenter__(self) -> PolicyServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ----- the host's side ---------------------------------------------------------------------

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return self._session.behavior_specs

    @property
    def stats(self) -> SessionStats:
        return self._session.stats

    @property
    def policies(self) -> Mapping[str, Policy]:
        return dict(self._policies)

    @property
    def error(self) -> BaseException | None:
        """The last forward-pass failure (its decisions failed, serving went on), or why serving stopped."""
        return self._error

    async def decide(
        self,
        agent_id: int | np.integer[Any],
        obs: Any,
        reward: float = 0.0,
        terminated: bool | np.bool_ = False,
        truncated: bool | np.bool_ = False,
        *,
        behavior: str | None = None,
        action_mask: Any = None,
    ) -> AgentAction | None:
        """As :meth:`GameSession.decide`: the agent's action, or None when the call ended its episode."""
        self._ensure_started()
        return await self._session.decide(
            agent_id, obs, reward, terminated, truncated, behavior=behavior, action_mask=action_mask
        )

    async def decide_batch(
        self,
        behavior: str | None,
        agent_ids: Any,
        obs: Any,
        rewards: Any = None,
        terminated: Any = None,
        truncated: Any = None,
        *,
        action_mask: Any = None,
    ) -> ActionBatch:
        """As :meth:`GameSession.decide_batch`."""
        self._ensure_started()
        return await self._session.decide_batch(
            behavior, agent_ids, obs, rewards, terminated, truncated, action_mask=action_mask
        )

    def leave(self, agent_id: int | np.integer[Any]) -> bool:
        """Forget an agent (it no longer holds batches open waiting for its decision)."""
        return self._session.leave(agent_id)

    def publish(self, policy: PolicySource, behavior: str | None = None) -> None:
        """Serve ``policy`` from the next batch on (the batch being computed keeps the old one).

        :raises SpecError: unknown behavior, a policy whose observation or action spec differs, or
            whose weights do not fit its network or are not finite.
        :raises EnvError: the policy could not be loaded. After any error the previous policy
            keeps serving.
        """
        try:
            new = load_policy(policy, behavior)
        except EnvError as exc:
            raise type(exc)(f"{exc} The server keeps serving the previous policy.") from exc
        name = behavior if behavior is not None else new.behavior_name
        if name not in self._policies:
            if behavior is None and len(self._policies) == 1:
                name = next(iter(self._policies))
            else:
                raise SpecError(f"PolicyServer.publish: unknown behavior '{name}'; serving {sorted(self._policies)}.")
        old = self._policies[name]
        if not _same_interface(new, old):
            raise SpecError(
                f"PolicyServer.publish: the new policy of behavior '{name}' has spec {new.behavior_spec} and "
                f"memory_size {memory_size_of(new)}, but the server serves {old.behavior_spec} with memory_size "
                f"{memory_size_of(old)}."
            )
        self._policies[name] = new

    # ----- serving -----------------------------------------------------------------------------

    async def _serve(self) -> None:
        session = self._session
        try:
            steps = await session.reset()
            while True:
                steps = await session.step(self._act(steps))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._error = exc
            logger.exception("PolicyServer stopped: a forward pass failed")
            await session.aclose(reason=f"the PolicyServer's forward pass failed: {type(exc).__name__}: {exc}")

    def _act_with_memory(
        self, policy: RecurrentPolicy, obs: list[F32], agents: Any, allowed: F32 | None, memories: dict[int, F32]
    ) -> tuple[F32, I32]:
        m = policy.memory_size
        zeros = np.zeros(m, np.float32)
        ids = [int(a) for a in agents]
        before = np.stack([memories.get(i, zeros) for i in ids])
        cont, disc, after = policy.act_with_memory(
            obs, allowed, before, deterministic=self.deterministic, rng=self._rng
        )
        after = np.asarray(after, np.float32)
        if after.shape != (len(ids), m) or not np.isfinite(after).all():
            raise SpecError(
                f"the policy returned memories of shape {after.shape} (or not finite); expected ({len(ids)}, {m})."
            )
        for i, row in zip(ids, after, strict=True):
            memories[i] = row.copy()
        return cont, disc

    def _act(self, steps: dict[str, StepBatch]) -> dict[str, ActionBatch]:
        """One forward pass per behavior. A behavior whose policy fails, or returns actions of the
        wrong shape or not finite, has its batch's decisions fail with :class:`EnvError`; the
        other behaviors are answered and serving goes on with the next batch."""
        actions: dict[str, ActionBatch] = {}
        for name, batch in steps.items():
            memories = self._memories.setdefault(name, {})
            for agent in batch.terminal.agent_id:  # an episode ended (or its agent left): forget its memory
                memories.pop(int(agent), None)
            decision = batch.decision
            if not len(decision):
                continue
            policy = self._policies[name]  # read once per batch: publish() swaps between batches
            allowed = None
            if decision.action_mask is not None:
                allowed = (~decision.action_mask).astype(np.float32)
            try:
                if isinstance(policy, RecurrentPolicy) and policy.memory_size:
                    cont, disc = self._act_with_memory(policy, decision.obs, decision.agent_id, allowed, memories)
                else:
                    cont, disc = policy.act(decision.obs, allowed, deterministic=self.deterministic, rng=self._rng)
                cont, disc = _checked_actions(policy.behavior_spec, len(decision), cont, disc)
            except Exception as exc:
                self._forward_failed(name, len(decision), exc)
                continue
            if name in self._failing:
                logger.warning(
                    "PolicyServer: behavior '%s' acts again, after %d failed batches.", name, self._failing.pop(name)
                )
            actions[name] = ActionBatch(cont, disc, decision.agent_id)
        return actions

    def _forward_failed(self, name: str, size: int, exc: Exception) -> None:
        self._error = exc
        reason = (
            f"the PolicyServer's forward pass failed on this batch of {size} decisions "
            f"({type(exc).__name__}: {exc}); the server goes on serving, so a later decision may succeed."
        )
        self._session.fail_decisions(name, reason)
        failed = self._failing.get(name, 0)
        if not failed:  # once per run of failures, not per batch
            logger.error(
                "PolicyServer: the policy of behavior '%s' failed on a batch of %d decisions; "
                "those decisions get an EnvError, serving goes on.",
                name,
                size,
                exc_info=exc,
            )
        self._failing[name] = failed + 1


def _checked_actions(spec: BehaviorSpec, rows: int, cont: Any, disc: Any) -> tuple[F32, npt.NDArray[np.int32]]:
    """A policy's actions as the session takes them.

    :raises SpecError: not of shape ``(rows, size)`` for the spec's action sizes, continuous
        values not finite, or a discrete action outside its branch.
    """
    a = spec.action_spec
    cont = np.asarray(cont, np.float32)
    disc_arr = np.asarray(disc)
    if cont.size == 0 and not a.continuous_size:
        cont = cont.reshape(rows, 0)  # a discrete-only policy may give (rows,) or (0,) for its empty part
    if disc_arr.size == 0 and not a.discrete_size:
        disc_arr = disc_arr.astype(np.int32).reshape(rows, 0)
    if cont.shape != (rows, a.continuous_size) or disc_arr.shape != (rows, a.discrete_size):
        raise SpecError(
            f"the policy returned continuous actions of shape {cont.shape} and discrete {disc_arr.shape}; "
            f"expected {(rows, a.continuous_size)} and {(rows, a.discrete_size)}."
        )
    if not np.isfinite(cont).all():
        raise SpecError("the policy returned continuous actions that are NaN or infinite.")
    if a.discrete_size:
        branches = np.asarray(a.discrete_branches)
        if not np.issubdtype(disc_arr.dtype, np.integer) or ((disc_arr < 0) | (disc_arr >= branches)).any():
            raise SpecError(
                f"the policy returned discrete actions outside their branches {tuple(a.discrete_branches)}."
            )
    return cont, disc_arr.astype(np.int32, copy=False)

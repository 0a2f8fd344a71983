"""Checks of what a host passes to ``decide()`` / ``decide_batch()`` / ``leave()``.

Every check runs before the session changes any state, and every failure is a
:class:`~asynctrainer.errors.SpecError` naming the agent, the behavior and what is allowed.
Values are checked as the learner will see them: after the cast to float32 (a reward of
``1e39`` is finite as a Python float and infinite as a float32) and, for agent ids, as int64.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from asynctrainer.envs.game_session.entries import F32, I64, AgentAction, B
from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.errors import SpecError

#: dtype kinds that cast to float32 without losing meaning: bool, signed, unsigned, float.
_CASTABLE_KINDS = frozenset("biuf")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)


def who(agent_id: int | None) -> str:
    return "decide_batch()" if agent_id is None else f"agent {agent_id}"


def check_agent_id(agent_id: Any) -> int:
    """``agent_id`` as an int that fits int64 (bools are refused)."""
    if type(agent_id) is not int:
        if isinstance(agent_id, bool | np.bool_):
            raise SpecError(f"GameSession: agent ids are ints, got {agent_id!r}.")
        try:
            agent_id = operator.index(agent_id)
        except TypeError:
            raise SpecError(f"GameSession: agent ids are ints, got {type(agent_id).__name__} {agent_id!r}.") from None
    if not _INT64_MIN <= agent_id <= _INT64_MAX:
        raise SpecError(f"GameSession: agent id {agent_id} does not fit int64; ids must be in [-2**63, 2**63 - 1].")
    return int(agent_id)


def check_agent_ids(agent_ids: Any, name: str) -> I64:
    """``decide_batch()``'s agent ids as a fresh int64 array ``[n]``: ints that fit int64, distinct, at least one."""
    try:
        ids = np.asarray(agent_ids)
    except Exception as exc:
        raise SpecError(f"GameSession: decide_batch() agent_ids of behavior '{name}' are not ints: {exc}") from None
    if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
        raise SpecError(
            f"GameSession: decide_batch() of behavior '{name}' needs agent_ids as ints [n] that fit int64, "
            f"got dtype {ids.dtype} shape {ids.shape}."
        )
    if ids.size == 0:
        raise SpecError(f"GameSession: decide_batch() of behavior '{name}' got no agents.")
    if ids.dtype.kind == "u" and int(ids.max()) > _INT64_MAX:
        raise SpecError(
            f"GameSession: decide_batch() of behavior '{name}' got agent id {int(ids.max())}, which does not fit "
            "int64; ids must be in [-2**63, 2**63 - 1]."
        )
    ids = ids.astype(np.int64)  # a copy, like every array the session keeps
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise SpecError(
            f"GameSession: decide_batch() of behavior '{name}' lists agent {int(uniq[counts > 1][0])} twice."
        )
    return ids


def as_float(value: Any, where: str) -> F32:
    """A float32 copy of ``value``; ``where`` names it in errors."""
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise SpecError(f"GameSession: {where} is not an array: {exc}") from None
    if arr.dtype.kind not in _CASTABLE_KINDS:
        raise SpecError(f"GameSession: {where} has dtype {arr.dtype}, which cannot be cast to float32.")
    # Always a copy: the host may reuse its buffers while the learner still holds these rows.
    with np.errstate(over="ignore"):
        return np.array(arr, dtype=np.float32)


def single_obs(spec: BehaviorSpec, name: str, agent_id: int, obs: Any) -> tuple[F32, ...]:
    """One agent's observation(s) as float32 copies of the spec's shapes, finite."""
    specs = spec.observation_specs
    whom = f"agent {agent_id} of behavior '{name}'"
    if len(specs) == 1:
        parts: Sequence[Any] = (obs,)
    elif isinstance(obs, list | tuple) and len(obs) == len(specs):
        parts = obs
    else:
        raise SpecError(
            f"GameSession: {whom} must give {len(specs)} observations (one per observation spec), "
            f"got {type(obs).__name__}."
        )
    out = []
    for i, (part, ospec) in enumerate(zip(parts, specs, strict=True)):
        what = f"the observation of {whom}" if len(specs) == 1 else f"observation {i} of {whom}"
        arr = as_float(part, what)
        if arr.shape != ospec.shape:
            raise SpecError(f"GameSession: {what} has shape {arr.shape}, expected {ospec.shape}.")
        if not np.isfinite(arr).all():
            raise SpecError(f"GameSession: {what} contains NaN or infinite values (after the cast to float32).")
        out.append(arr)
    return tuple(out)


def batch_obs(spec: BehaviorSpec, name: str, n: int, obs: Any, whom: Callable[[int], str]) -> list[F32]:
    """``decide_batch()``'s observations: one float32 ``[n, *shape]`` copy per observation spec, finite."""
    specs = spec.observation_specs
    if len(specs) > 1 and (not isinstance(obs, list | tuple) or len(obs) != len(specs)):
        raise SpecError(
            f"GameSession: decide_batch() of behavior '{name}' must give {len(specs)} observation arrays "
            f"(one per observation spec), got {type(obs).__name__}."
        )
    parts: Sequence[Any] = (obs,) if len(specs) == 1 else obs
    arrays: list[F32] = []
    for i, (part, ospec) in enumerate(zip(parts, specs, strict=True)):
        arr = as_float(part, f"observation {i} of decide_batch() of behavior '{name}'")
        if arr.shape != (n, *ospec.shape):
            raise SpecError(
                f"GameSession: observation {i} of decide_batch() of behavior '{name}' has shape {arr.shape}, "
                f"expected {(n, *ospec.shape)} for {n} agents."
            )
        bad = ~np.isfinite(arr.reshape(n, -1)).all(axis=1)
        if bad.any():
            raise SpecError(
                f"GameSession: observation {i} of {whom(int(np.flatnonzero(bad)[0]))} contains NaN or "
                f"infinite values ({int(bad.sum())} agents of this batch do)."
            )
        arrays.append(arr)
    return arrays


def _number(reward: Any) -> float | None:
    """``reward`` as a float, or None when it is no number (a string or a bool, though ``float()`` takes them)."""
    if isinstance(reward, str | bytes | bool | np.bool_):
        return None
    try:
        return float(reward)
    except (TypeError, ValueError):
        return None


def check_reward(name: str, agent_id: int, reward: Any) -> float:
    """One agent's reward as a float that is finite as a float32 (as the learner stores it)."""
    value = _number(reward)
    if value is None:
        raise SpecError(
            f"GameSession: the reward of agent {agent_id} of behavior '{name}' is not a number: {reward!r}."
        )
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise SpecError(
            f"GameSession: the reward of agent {agent_id} of behavior '{name}' is {value}; rewards must be finite "
            f"float32 values (|reward| <= {FLOAT32_MAX:.6g})."
        )
    return value


def check_group_reward(group_id: int, reward: Any) -> float:
    """A group reward, checked as :func:`check_reward` checks an agent's."""
    value = _number(reward)
    if value is None or not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise SpecError(
            f"GameSession: the group reward {reward!r} for group {group_id} is not a finite float32 number "
            f"(|reward| <= {FLOAT32_MAX:.6g})."
        )
    return value


def batch_rewards(rewards: Any, n: int, name: str, whom: Callable[[int], str]) -> F32:
    """``decide_batch()``'s rewards: float32 ``[n]`` (zeros when None), finite after the cast."""
    if rewards is None:
        return np.zeros(n, np.float32)
    rew = as_float(rewards, f"the rewards of decide_batch() of behavior '{name}'")
    if rew.shape != (n,):
        raise SpecError(f"GameSession: rewards of behavior '{name}' have shape {rew.shape}, expected ({n},).")
    bad = ~np.isfinite(rew)
    if bad.any():
        raise SpecError(
            f"GameSession: the reward of {whom(int(np.flatnonzero(bad)[0]))} is not finite as a float32 "
            f"(|reward| <= {FLOAT32_MAX:.6g})."
        )
    return rew


def check_flag(value: Any, what: str, agent_id: int, name: str) -> bool:
    """``terminated`` / ``truncated`` of one ``decide()``: a bool (or a 0-d bool/int array)."""
    if type(value) is bool:
        return value
    arr = np.asarray(value)
    if arr.shape != () or arr.dtype.kind not in "biu":
        raise SpecError(
            f"GameSession: {what} of agent {agent_id} of behavior '{name}' must be one bool, "
            f"got {type(value).__name__} {value!r}."
        )
    return bool(arr)


def flags(value: Any, n: int, what: str, name: str) -> B:
    """``terminated`` / ``truncated`` of ``decide_batch()``: bools ``[n]`` (all False when None)."""
    if value is None:
        return np.zeros(n, bool)
    arr = np.asarray(value)
    if arr.shape != (n,) or arr.dtype.kind not in "biu":
        raise SpecError(
            f"GameSession: {what} of behavior '{name}' must be bools [{n}], got dtype {arr.dtype} shape {arr.shape}."
        )
    return arr.astype(bool)


def action_mask(spec: BehaviorSpec, name: str, mask: Any, n: int | None, whom: Callable[[int], str]) -> B | None:
    """An action mask (True = forbidden): ``[sum(branches)]`` for one agent (``n`` None), else ``[n, branches]``."""
    if mask is None:
        return None
    a = spec.action_spec
    if not a.is_discrete():
        raise SpecError(
            f"GameSession: {whom(0) if n is None else f'decide_batch() of behavior {name!r}'} gave an action "
            "mask, but the behavior has no discrete actions."
        )
    what = f"the action mask of {whom(0)}" if n is None else f"the action mask of behavior '{name}'"
    try:
        raw = np.asarray(mask)
    except Exception as exc:  # ragged lists and the like
        raise SpecError(f"GameSession: {what} is not an array: {exc}") from None
    if raw.dtype.kind not in "biu" or (raw.dtype.kind != "b" and raw.size and not np.isin(raw, (0, 1)).all()):
        raise SpecError(
            f"GameSession: {what} has dtype {raw.dtype}; give bools (True = forbidden) or 0/1 ints."
            if raw.dtype.kind not in "biu"
            else f"GameSession: {what} holds values other than 0 and 1; give bools (True = forbidden) or 0/1 ints."
        )
    arr = np.array(raw, dtype=bool)  # a copy: the host may reuse its buffer
    shape = (a.mask_size,) if n is None else (n, a.mask_size)
    if arr.shape != shape:
        raise SpecError(f"GameSession: {what} has shape {arr.shape}, expected {shape}.")
    rows = arr[None] if n is None else arr
    start = 0
    for b, size in enumerate(a.discrete_branches):
        full = rows[:, start : start + size].all(axis=1)
        if full.any():
            row = int(np.flatnonzero(full)[0])
            raise SpecError(f"GameSession: the action mask of {whom(row)} forbids every action of branch {b}.")
        start += size
    return arr


def player_action(spec: BehaviorSpec, name: str, agent_id: int, action: Any) -> AgentAction:
    """A player's own action for ``decide(..., action=...)``: an :class:`AgentAction` or ``(continuous, discrete)``.

    :raises SpecError: naming the agent, when the parts do not fit the action spec, a continuous
        value is not finite or outside [-1, 1], or a discrete value is outside its branch.
    """
    a = spec.action_spec
    where = f"GameSession: the action given for agent {agent_id} of behavior '{name}'"
    try:
        continuous_part, discrete_part = action
        continuous = np.asarray(continuous_part if continuous_part is not None else [], np.float32).reshape(-1)
        discrete = np.asarray(discrete_part if discrete_part is not None else [], np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise SpecError(
            f"{where} is {type(action).__name__}; give an AgentAction or a (continuous, discrete) pair."
        ) from None
    if continuous.size != a.continuous_size or discrete.size != a.discrete_size:
        raise SpecError(
            f"{where} has {continuous.size} continuous and {discrete.size} discrete values; the behavior has "
            f"{a.continuous_size} continuous and {a.discrete_size} discrete (branches {list(a.discrete_branches)})."
        )
    if not (np.isfinite(continuous).all() and (np.abs(continuous) <= 1.0).all()):
        raise SpecError(f"{where} has continuous values {continuous.tolist()}; each must be finite, in [-1, 1].")
    if ((discrete < 0) | (discrete >= np.asarray(a.discrete_branches, np.int64))).any():
        raise SpecError(
            f"{where} has discrete values {discrete.tolist()} outside the branches {list(a.discrete_branches)}."
        )
    return AgentAction(continuous, discrete.astype(np.int32))

"""Self-play as ML-Agents' ghost trainer has it: one team learns, the others play frozen snapshots.

The teams of a game are behaviors ``Name?team=N``. One :class:`SelfPlayController` per run
says which team learns and keeps the others in a queue; one :class:`Ghost` per behavior name
stands between that behavior's teams and its trainer:

- the learning team's trajectories go to the trainer (and count for ELO); the other teams'
  are dropped, their lengths counted as ghost steps;
- each new policy of the trainer goes to the learning team; every ``save_steps`` trainer
  steps it is also kept in a window of ``window`` snapshots;
- every ``swap_steps`` ghost steps, and whenever the learning team changes, each other team
  gets a snapshot drawn from the window (or, with probability
  ``play_against_latest_model_ratio``, the newest policy);
- every ``team_change`` trainer steps the next team in the queue learns, and every env is
  reset so that no episode mixes the old and the new assignment of policies.

Ratings follow ML-Agents: the learner's rating moves by ``result − E`` after each finished
game, ``E = 1 / (1 + 10^((R_opponent − R) / 400))``, and the opponent's snapshot by the
opposite. Everything runs on the event loop; snapshots are the numpy snapshots acting uses.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

import anyio
import numpy as np

from asynctrainer.envs.spec import BehaviorSpec
from asynctrainer.errors import CheckpointLoadError, SpecError
from asynctrainer.runtime.channels import Overflow, TrajectorySink
from asynctrainer.runtime.env_loop import BehaviorLink, EnvResets
from asynctrainer.runtime.policy_slot import PolicySlot
from asynctrainer.runtime.snapshot import PolicySnapshot
from asynctrainer.runtime.trainer import RLTrainer
from asynctrainer.runtime.trajectory import Trajectory
from asynctrainer.settings import SelfPlaySettings

__all__ = ["ELO_STAT", "Ghost", "SelfPlayController", "elo_change", "game_result"]

logger = logging.getLogger("asynctrainer")

ELO_STAT = "Self-play/ELO"
#: Order of the counters in a checkpoint's ``selfplay/counters``.
_COUNTERS = ("counter", "ghost_step", "last_save", "last_swap", "last_team_change", "current_opponent")


def elo_change(rating: float, opponent_rating: float, result: float) -> float:
    """The learner's rating change after one game: ``result − E`` with ``E = r / (r + r_opp)``,
    ``r = 10^(rating / 400)``: ML-Agents' formula, without a K factor."""
    r = 10.0 ** (rating / 400.0)
    r_opponent = 10.0 ** (opponent_rating / 400.0)
    return result - r / (r + r_opponent)


def game_result(trajectory: Trajectory) -> float | None:
    """1 (won), 0 (lost) or 0.5 (draw) by the sign of the last reward, for a trajectory that ends
    a game; None when it does not (cut mid-episode or interrupted)."""
    if not trajectory.terminated or trajectory.interrupted:
        return None
    last = float(trajectory.rewards[-1])
    return 1.0 if last > 0 else 0.0 if last < 0 else 0.5


class SelfPlayController:
    """The run's learning team, the queue of the others, and the ratings between them.

    The first team subscribed learns first. :meth:`change_learning_team` moves it to the back
    of the queue, lets the next one learn, tells every ghost and asks every env for a reset.
    """

    def __init__(self, resets: EnvResets | None = None) -> None:
        self._ghosts: dict[int, Ghost] = {}
        self._queue: deque[int] = deque()
        self._retired: set[int] = set()
        self.learning_team = -1
        #: The run's reset requests (shared with the curricula's ``require_reset``).
        self.resets = resets if resets is not None else EnvResets()

    def subscribe(self, team: int, ghost: Ghost) -> None:
        """:raises SpecError: when another behavior already has this team id."""
        other = self._ghosts.get(team)
        if other is not None and other is not ghost:
            raise SpecError(
                f"Self-play: behaviors '{other.behavior_name}' and '{ghost.behavior_name}' both have team {team}; "
                "each team id must belong to one behavior name (Name?team=N)."
            )
        if other is not None:
            return
        self._ghosts[team] = ghost
        if self.learning_team < 0:
            self.learning_team = team
        else:
            self._queue.append(team)

    def change_learning_team(self) -> None:
        self._queue.append(self.learning_team)
        self._next_learner()

    def retire(self, ghost: Ghost) -> None:
        """``ghost``'s trainer finished: its teams leave the queue, and learning moves on if one of them learned."""
        teams = {team for team, g in self._ghosts.items() if g is ghost}
        self._retired |= teams
        self._queue = deque(team for team in self._queue if team not in teams)
        if self.learning_team in teams and self._queue:
            self._next_learner()

    def _next_learner(self) -> None:
        self.learning_team = self._queue.popleft()
        self.resets.requested += 1
        logger.debug("Self-play: team %d learns now", self.learning_team)
        for ghost in {id(g): g for g in self._ghosts.values()}.values():
            ghost.learning_team_changed()

    def rate(self, rating: float, result: float) -> float:
        """The learner's rating change after a game with ``result``; the opponents' snapshots move the other way."""
        opponents = [ghost for team, ghost in self._ghosts.items() if team != self.learning_team]
        opponent_rating = opponents[-1].opponent_elo if opponents else 0.0
        change = elo_change(rating, opponent_rating, result)
        for ghost in opponents:
            ghost.opponent_elo -= change
        return change


class _TeamSender:
    """A team's trajectory sink: to the trainer while the team learns, dropped (and counted) otherwise."""

    overflow: Overflow = "block"

    def __init__(self, ghost: Ghost, team: int) -> None:
        self._ghost = ghost
        self._team = team

    async def send(self, item: Trajectory) -> None:
        await self._ghost.route(self._team, item)

    def close(self) -> None:
        """The ghost closes the trainer's channel once the run ends."""


@dataclasses.dataclass
class _Team:
    link: BehaviorLink
    #: The trainer's pacing, given to the link while its team learns.
    strict_on_policy: bool
    lag_bound: int | None


class Ghost:
    """One behavior's self-play between its teams and its trainer (ML-Agents' ``GhostTrainer``).

    :param trainer: the behavior's trainer; its trajectories come from :meth:`route`, its
        policies are read from the slot given to :meth:`start`.
    :param rng: draws the opponents' snapshots.
    """

    def __init__(
        self,
        trainer: RLTrainer[Any],
        settings: SelfPlaySettings,
        controller: SelfPlayController,
        rng: np.random.Generator,
    ) -> None:
        self.trainer = trainer
        self.behavior_name = trainer.behavior_name
        self.settings = settings
        self.controller = controller
        self._rng = rng
        assert settings.team_change is not None  # the settings fill it in
        self.team_change = settings.team_change
        self.teams: dict[int, _Team] = {}
        #: The kept snapshots (ring of ``window``) and their ratings; the last rating is the learner's.
        self.window: list[PolicySnapshot] = []
        self.elos = [settings.initial_elo] * (settings.window + 1)
        self.counter = 0
        self.ghost_step = 0
        self.last_save = 0
        self.last_swap = 0
        self.last_team_change = 0
        #: The window index the other teams play now (−1: the newest policy).
        self.current_opponent = 0
        self.current: PolicySnapshot | None = None
        self._trainer_slot: PolicySlot | None = None
        self._to_trainer: TrajectorySink[Trajectory] | None = None
        self._learning_team = -1
        self._last_learner: _Team | None = None
        self._in_flight = 0
        self._check_pending = False
        self._restored: dict[str, np.ndarray] = {}

    # ----- wiring (before the run) -----------------------------------------------------------

    def team_link(self, team: int, env_name: str, trainer_link: BehaviorLink) -> BehaviorLink:
        """The link of one team: ``trainer_link``'s settings with its own slot and sender."""
        link = dataclasses.replace(
            trainer_link,
            slot=PolicySlot(env_name),
            send=_TeamSender(self, team),
            resets=self.controller.resets,
        )
        self.teams[team] = _Team(link, trainer_link.strict_on_policy, trainer_link.lag_bound)
        self.controller.subscribe(team, self)
        return link

    def start(self, trainer_slot: PolicySlot, to_trainer: TrajectorySink[Trajectory]) -> None:
        """Connect to the trainer (its first snapshot published) and give every team a policy."""
        self._trainer_slot = trainer_slot
        self._to_trainer = to_trainer
        self.current = trainer_slot.latest()
        if self._restored:
            self._take_restored(self._restored, self.current.behavior_spec)
        else:
            self._save_snapshot()
        self._learning_team = self.controller.learning_team
        for team, entry in self.teams.items():
            self._pace(entry, learning=team == self._learning_team)
            entry.link.slot.load(self.current)

    async def run(self) -> None:
        """Pass each new policy of the trainer on, until the trainer's slot closes."""
        assert self._trainer_slot is not None
        slot = self._trainer_slot
        version = slot.version
        while True:
            snapshot = await slot.wait_newer(version)
            if snapshot.version > version:
                version = snapshot.version
                self.current = snapshot
                learner = self.teams.get(self.controller.learning_team)
                if learner is not None:
                    learner.link.slot.load(snapshot)
                self._check()
            if slot.closed:
                return

    def retire(self) -> None:
        """The trainer finished: the next team learns; this behavior's teams play on as
        opponents, with snapshots from its window."""
        self.controller.retire(self)

    def close(self) -> None:
        """The run ends: close the trainer's channel and every team's slot."""
        if self._to_trainer is not None:
            self._to_trainer.close()
        for entry in self.teams.values():
            entry.link.slot.close()

    # ----- the loop side ---------------------------------------------------------------------

    async def route(self, team: int, trajectory: Trajectory) -> None:
        """One trajectory of ``team``: to the trainer while it learns, else counted and dropped."""
        assert self._to_trainer is not None
        # The env loop counts what it sent to the learner (strict on-policy) right after this
        # returns, by the team that learns then: so no team change may come between the
        # decision below and that count. Hence the checkpoint first, and no team change while
        # a send to the trainer waits (that count moves to the next learning team with it).
        await anyio.lowlevel.checkpoint()
        if self._check_pending:
            self._check()
        if team != self.controller.learning_team:
            self.ghost_step += len(trajectory)
            self._swap_if_due()
            return
        result = game_result(trajectory)
        if result is not None:
            change = self.controller.rate(self.elos[-1], result)
            self.elos[-1] += change
            self.trainer.stats_reporter.add_stat(ELO_STAT, self.elos[-1])
        self._in_flight += 1
        try:
            await self._to_trainer.send(trajectory)
        finally:
            self._in_flight -= 1

    @property
    def opponent_elo(self) -> float:
        return self.elos[self.current_opponent]

    @opponent_elo.setter
    def opponent_elo(self, value: float) -> None:
        self.elos[self.current_opponent] = value

    def _check(self) -> None:
        """ML-Agents' order after each advance: team change, snapshot saving, opponent swap."""
        if self._in_flight:
            self._check_pending = True  # done by the next route, once the send completed and was counted
            return
        self._check_pending = False
        step = self.trainer.step
        learns_here = self.controller.learning_team in self.teams
        if learns_here and step - self.last_team_change > self.team_change:
            self.last_team_change = step
            self.controller.change_learning_team()
        if step - self.last_save > self.settings.save_steps:
            self._save_snapshot()
            self.last_save = step
        self._swap_if_due()

    def learning_team_changed(self) -> None:
        """The controller moved learning to another team: pace the links, hand out policies."""
        learning = self.controller.learning_team
        self._learning_team = learning
        # The trainer's buffer already holds what the team that learned here before sent.
        carried = None if self._last_learner is None else self._last_learner.link.since_update
        for team, entry in self.teams.items():
            self._pace(entry, learning=team == learning, since_update=carried)
        new = self.teams.get(learning)
        if new is not None:
            assert self.current is not None
            new.link.slot.load(self.current)
        self._swap()

    def _pace(self, entry: _Team, *, learning: bool, since_update: int | None = None) -> None:
        """The learner's link is paced like the trainer's; the others never wait for a policy."""
        if learning:
            entry.link.pace(
                strict_on_policy=entry.strict_on_policy, lag_bound=entry.lag_bound, since_update=since_update
            )
            self._last_learner = entry
        else:
            entry.link.pace(strict_on_policy=False, lag_bound=None)

    def _save_snapshot(self) -> None:
        assert self.current is not None
        if len(self.window) < self.settings.window:
            self.window.append(self.current)
        else:
            self.window[self.counter] = self.current
        self.elos[self.counter] = self.elos[-1]
        self.counter = (self.counter + 1) % self.settings.window

    def _swap_if_due(self) -> None:
        if self.ghost_step - self.last_swap > self.settings.swap_steps:
            self._swap()

    def _swap(self) -> None:
        """Give every team that does not learn a snapshot from the window, or the newest policy."""
        assert self.current is not None
        self.last_swap = self.ghost_step
        for team, entry in self.teams.items():
            if team == self._learning_team:
                continue
            if self._rng.uniform() < 1.0 - self.settings.play_against_latest_model_ratio:
                self.current_opponent = int(self._rng.integers(len(self.window)))
                snapshot = self.window[self.current_opponent]
            else:
                self.current_opponent = -1
                snapshot = self.current
            entry.link.slot.load(snapshot)
            logger.debug(
                "Self-play: ghost step %d, team %d plays snapshot %d (team %d learns)",
                self.ghost_step,
                team,
                self.current_opponent,
                self._learning_team,
            )

    # ----- checkpoints (TrainerCompanion) ---------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """The window's snapshots, their ratings and the step counters."""
        values = [getattr(self, name) for name in _COUNTERS]
        out = {"elos": np.array(self.elos, np.float64), "counters": np.array(values, np.int64)}
        for i, snapshot in enumerate(self.window):
            out.update({f"window/{i}/{key}": value for key, value in snapshot.to_arrays().items()})
        return out

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Keep the saved state until :meth:`start` (it rebuilds the snapshots on the loop)."""
        self._restored = dict(state)

    def _take_restored(self, state: Mapping[str, np.ndarray], spec: BehaviorSpec) -> None:
        name, size = self.behavior_name, self.settings.window
        elos, counters = state.get("elos"), state.get("counters")
        if elos is None or counters is None or elos.shape != (size + 1,) or counters.shape != (len(_COUNTERS),):
            raise CheckpointLoadError(
                f"Behavior '{name}': the checkpoint's self-play state does not fit window {size}: "
                f"'selfplay/elos' must hold {size + 1} ratings and 'selfplay/counters' {len(_COUNTERS)} integers."
            )
        window: list[PolicySnapshot] = []
        while f"window/{len(window)}/header" in state:
            mark = f"window/{len(window)}/"
            arrays = {k[len(mark) :]: v for k, v in state.items() if k.startswith(mark)}
            try:
                window.append(PolicySnapshot.from_arrays(arrays, spec))
            except (SpecError, KeyError) as exc:
                raise CheckpointLoadError(
                    f"Behavior '{name}': self-play snapshot {len(window)} of the checkpoint cannot be read: {exc}"
                ) from None
        values = dict(zip(_COUNTERS, (int(v) for v in counters), strict=True))
        if not 1 <= len(window) <= size or not 0 <= values["counter"] < size:
            raise CheckpointLoadError(
                f"Behavior '{name}': the checkpoint keeps {len(window)} self-play snapshots; 1 to {size} are allowed."
            )
        self.window = window
        self.elos = [float(e) for e in elos]
        for key, value in values.items():
            setattr(self, key, value)
        if self.current_opponent >= len(window):
            self.current_opponent = -1

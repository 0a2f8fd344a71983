"""Tic-tac-toe from PettingZoo's classic set, trained by self-play, then played against two fixed players.

PPO with ``self_play`` trains ``player?team=0`` (who moves first) and ``player?team=1`` against
each other's snapshots (``PettingZooEnv`` with ``self_play_groups={"player"}``). The final
policy (the numpy snapshot, acting with the distribution's mode) then plays ``--games`` games
against each opponent, half of them moving first:

- ``random``: a uniformly random legal move;
- ``scripted``: wins when it can, blocks the opponent's win when it must, else moves at random.

A win counts 1, a draw ½. The untrained policy plays the same games, as the baseline.

    python benchmarks/pettingzoo_selfplay.py [--steps 100000] [--games 400]
        [--out benchmarks/out/pettingzoo_selfplay.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from asynctrainer import Runner
from asynctrainer.envs.pettingzoo_env import PettingZooEnv
from asynctrainer.runtime.snapshot import PolicySnapshot
from asynctrainer.settings import run_settings_from_dict

LINES = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]
Player = Callable[[np.ndarray, np.ndarray, np.random.Generator], int]


def config(steps: int) -> Any:
    return run_settings_from_dict(
        {
            "behaviors": {
                "player": {
                    "trainer_type": "ppo",
                    "hyperparameters": {
                        "batch_size": 256,
                        "buffer_size": 2048,
                        "learning_rate": 1e-3,
                        "beta": 0.01,
                        "num_epoch": 4,
                    },
                    "network_settings": {"hidden_units": 128, "num_layers": 2, "vis_encode_type": "fully_connected"},
                    "reward_signals": {"extrinsic": {"gamma": 0.99}},
                    "max_steps": steps,
                    "time_horizon": 16,
                    "summary_freq": 10000,
                    "self_play": {
                        "save_steps": 5000,
                        "team_change": 20000,
                        "swap_steps": 2000,
                        "window": 10,
                        "play_against_latest_model_ratio": 0.5,
                    },
                }
            }
        }
    )


def board_of(observation: np.ndarray) -> np.ndarray:
    """PettingZoo's (3, 3, 2) planes (own marks, the opponent's) as 9 cells: 1 own, −1 theirs, 0 empty."""
    planes = observation.reshape(3, 3, 2)
    return (planes[..., 0] - planes[..., 1]).reshape(9)


def random_player(observation: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> int:
    return int(rng.choice(np.flatnonzero(allowed)))


def scripted_player(observation: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> int:
    cells = board_of(observation)
    for mark in (1, -1):  # win, else block
        for line in LINES:
            values = cells[list(line)]
            if (values == mark).sum() == 2 and (values == 0).sum() == 1:
                return int(line[int(np.flatnonzero(values == 0)[0])])
    return random_player(observation, allowed, rng)


def policy_player(snapshot: PolicySnapshot) -> Player:
    def play(observation: np.ndarray, allowed: np.ndarray, rng: np.random.Generator) -> int:
        obs = [observation.reshape(1, 3, 3, 2).astype(np.float32)]
        acted = snapshot.act(obs, allowed.reshape(1, 9).astype(np.float32), deterministic=True, rng=rng)
        return int(acted.discrete[0, 0])

    return play


def score(policy: Player, opponent: Player, games: int, seed: int) -> dict[str, float]:
    """Win rate, draw rate and score (win 1, draw ½) of ``policy`` over ``games``, first in half of them."""
    import pettingzoo

    rng = np.random.default_rng(seed)
    env = pettingzoo.make("aec", "classic/tictactoe-v3")
    wins = draws = 0
    for game in range(games):
        env.reset(seed=seed + game)
        ours = "player_1" if game % 2 == 0 else "player_2"
        for agent in env.agent_iter():
            obs, reward, terminated, truncated, _ = env.last()
            if terminated or truncated:
                if agent == ours:
                    wins += reward > 0
                    draws += reward == 0
                env.step(None)
                continue
            player = policy if agent == ours else opponent
            env.step(player(obs["observation"], obs["action_mask"].astype(bool), rng))
    env.close()
    return {"win": wins / games, "draw": draws / games, "score": (wins + 0.5 * draws) / games}


async def train(steps: int, seed: int) -> tuple[PolicySnapshot, PolicySnapshot, float, dict[str, Any]]:
    import pettingzoo

    env = PettingZooEnv(pettingzoo.make("aec", "classic/tictactoe-v3"), self_play_groups={"player"}, seed=seed)
    runner = Runner(config(steps), env, seed=seed, stats_writers=[])
    start = time.perf_counter()
    first: PolicySnapshot | None = None
    async with runner:
        await runner.wait_started()
        first = runner.slots["player"].latest()
        result = await runner.wait()
    ghost = runner.ghosts["player"]
    info = {"updates": result.updates["player"], "elo": ghost.elos[-1], "ghost_steps": ghost.ghost_step}
    return first, runner.slots["player"].latest(), time.perf_counter() - start, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--games", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/pettingzoo_selfplay.json"))
    args = parser.parse_args()
    untrained, trained, seconds, info = asyncio.run(train(args.steps, args.seed))
    rows = []
    for name, opponent in (("random", random_player), ("scripted", scripted_player)):
        for label, snapshot in (("untrained", untrained), ("self-play", trained)):
            rows.append({"policy": label, "opponent": name, **score(policy_player(snapshot), opponent, args.games, 7)})
    updates, elo = info["updates"], info["elo"]
    print(f"tic-tac-toe self-play: {args.steps} steps in {seconds:.1f} s, {updates} updates, ELO {elo:.1f}")
    print(f"{'policy':<10} {'opponent':<9} {'win':>6} {'draw':>6} {'score':>6}")
    for r in rows:
        print(f"{r['policy']:<10} {r['opponent']:<9} {r['win']:6.3f} {r['draw']:6.3f} {r['score']:6.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "steps": args.steps,
        "seconds": seconds,
        "games": args.games,
        "machine": platform.platform(),
        "training": info,
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

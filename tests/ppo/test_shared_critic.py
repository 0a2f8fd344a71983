"""``hyperparameters.shared_critic``: the value head reads the actor's body, one set of weights."""

from __future__ import annotations

import numpy as np

from asynctrainer.envs.spec import ActionSpec, BehaviorSpec, ObservationSpec
from asynctrainer.nn.networks import ActorCritic

SPEC = BehaviorSpec((ObservationSpec((3,)),), ActionSpec.create_discrete((2,)))


def test_a_shared_critic_has_no_body_of_its_own() -> None:
    shared = ActorCritic(SPEC, hidden_units=8, num_layers=2, seed=0, shared_critic=True)
    separate = ActorCritic(SPEC, hidden_units=8, num_layers=2, seed=0)
    assert len(shared.critic_variables) == 2  # the value head's kernel and bias
    assert len(separate.critic_variables) == 2 * 2 + 2
    assert not any(name.startswith("critic") for name in shared.named_variables())
    assert len({id(v) for v in shared.trainable_variables}) == len(shared.trainable_variables)


def test_the_shared_value_moves_with_the_actor_body() -> None:
    net = ActorCritic(SPEC, hidden_units=8, num_layers=1, seed=0, shared_critic=True)
    obs = np.ones((4, 3), np.float32)
    before = np.array(net.value(obs))
    kernel = net.actor_body[0].kernel
    kernel.assign(kernel.numpy() * 2.0)
    assert not np.allclose(np.array(net.value(obs)), before)

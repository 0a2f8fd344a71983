"""Adam steps with one fused kernel per variable, inside traced update functions.

A Keras 3 ``Adam.apply`` builds its update from elementwise ops: for each variable two
powers, the bias-corrected step size, two slot updates and the variable's own update, about
25 graph ops a variable. In a small network's update those ops, not the arithmetic, are the
cost: a CartPole minibatch step of PPO runs about 960 ops, 0.65 ms on one core, for roughly
14 MFLOP of math. TensorFlow's ``ResourceApplyAdam`` kernel does a variable's whole update
in one op, with the same formula:

    lr_t = lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ)
    m ← m + (g − m)(1 − β₁)
    v ← v + (g² − v)(1 − β₂)
    θ ← θ − lr_t · m / (√v + ε)

(``t`` the step count after this step). :func:`adam_step` applies it to the Keras optimizer's
own slots and step counter, so checkpoints (which store those) are unchanged, and Keras's
``apply`` and this one can be mixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asynctrainer.nn.tf_setup import tf

__all__ = ["adam_step"]


def adam_step(optimizer: Any, grads: Sequence[Any], variables: Sequence[Any]) -> Any:
    """One Adam step of ``optimizer`` (a built ``keras.optimizers.Adam`` without weight decay,
    AMSGrad, EMA or gradient clipping of its own) on ``variables``, inside a traced function;
    returns the op that counts the step (the variables' updates run before it). A variable
    whose gradient is None is left as it is, slots included, as Keras's ``apply`` leaves it.

    :raises ValueError: an optimizer with one of those options, which the fused kernel does
        not have (programming error: the trainers create plain Adam optimizers).
    """
    t = tf()
    if optimizer.amsgrad or optimizer.weight_decay or optimizer.use_ema or optimizer.global_clipnorm:
        raise ValueError("adam_step takes a plain Adam optimizer (no amsgrad, weight decay, EMA or clipnorm).")
    f32 = t.float32
    step = t.cast(optimizer.iterations + 1, f32)
    beta_1, beta_2 = t.constant(optimizer.beta_1, f32), t.constant(optimizer.beta_2, f32)
    lr = t.cast(optimizer.learning_rate, f32)
    epsilon = t.constant(optimizer.epsilon, f32)
    beta_1_power, beta_2_power = t.pow(beta_1, step), t.pow(beta_2, step)
    updates = []
    for grad, variable in zip(grads, variables, strict=True):
        if grad is None:
            continue
        index = optimizer._get_variable_index(variable)
        updates.append(
            t.raw_ops.ResourceApplyAdam(
                var=variable.handle,
                m=optimizer._momentums[index].handle,
                v=optimizer._velocities[index].handle,
                beta1_power=beta_1_power,
                beta2_power=beta_2_power,
                lr=lr,
                beta1=beta_1,
                beta2=beta_2,
                epsilon=epsilon,
                grad=t.cast(grad, f32),
            )
        )
    with t.control_dependencies(updates):
        return optimizer.iterations.assign_add(1)

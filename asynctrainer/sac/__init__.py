"""Soft Actor-Critic: trainer, pure losses and the replay buffer (``trainer_type: sac``)."""

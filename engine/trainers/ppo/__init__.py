"""PPO on one frozen base: every role (policy, reference, value, reward, safety cost) is a named LoRA adapter.

Modules: :mod:`.experience` (the rollout record, tensors by shape), :mod:`.roles` (the adapters and how roles
switch), :mod:`.rewards` (reward model, separate model or rule; safety cost), :mod:`.experience_maker` (sampling,
scoring, reward shaping, GAE), :mod:`.trainer` (PPO epochs, clipped losses, KL controller), :mod:`.data` (prompts
of a snapshot), :mod:`.job` (the ``ppo`` stage in the training skeleton).
"""

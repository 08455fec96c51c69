"""The engine: model loading, quantisation, LoRA adapters, training (SFT, reward model, PPO, DPO), generation,
evaluation and the job worker. Imports torch and the model libraries; never Qt or ``ui``.

Submodules are imported on demand (``from engine.models import load_model``) so importing the package itself
stays cheap.
"""

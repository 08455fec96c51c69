"""RLHF Workbench core: the project file, data formats, run configs and the job client (no Qt, no torch)."""

__version__ = "0.1.0"

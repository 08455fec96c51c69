"""The error the model side of the engine raises for the user: one clear message naming the model and the fix."""

from __future__ import annotations

from workbench.errors import WorkbenchError


class ModelError(WorkbenchError):
    """A model reference that cannot be used: missing path, not a model, pickled weights, remote code, no cache.

    ``ref`` is the model reference as the user gave it; the message (``str(error)``) is meant to be shown as is.
    """

    def __init__(self, message: str, ref: str | None = None):
        self.ref = ref
        self.detail = message
        super().__init__(f"model {ref}: {message}" if ref else message)

"""Developer tools that drive the window but do not ship with it (not an installed package): the screenshot scripts
that regenerate the images in ``docs/``. Run them from the repository root, e.g. ``python -m tools.screenshots``."""

"""The pages of the main window: one module per page, each a :class:`ui.pages.base.Page`."""

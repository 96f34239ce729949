"""The one exception type users see. Standard library only (shipped with the plug-in)."""


class BrushworkError(Exception):
    """An error the user can act on: its message is one line, shown without a traceback."""

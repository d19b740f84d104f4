"""Replies that show a row together with what the caller may also see about it (a summary, the
parties of a case): the reply schema reads the row's columns and the view's own fields alike."""

from typing import Any


class RowView:
    """Reads as ``row`` for every attribute the subclass (a frozen dataclass) does not define itself."""

    row: Any

    def __getattr__(self, name):
        if name == "row":  # asked before the dataclass set it (copying, unpickling): no endless recursion
            raise AttributeError(name)
        return getattr(self.row, name)

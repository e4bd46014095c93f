"""The row a statement returns by construction: an aggregate, a SQL function, ``UPDATE ... RETURNING`` of a row
the transaction holds. psycopg types ``fetchone()`` as optional; where no row is a bug, ``one`` says so."""

from __future__ import annotations

from typing import Any

import psycopg


def one(cursor: psycopg.Cursor[Any]) -> Any:
    """The cursor's next row; ``LookupError`` when there is none."""
    row = cursor.fetchone()
    if row is None:
        raise LookupError("the statement returned no row")
    return row

"""Quoting for DuckDB SQL text. Values (paths, metadata) go in as prepared parameters (`$name`), never as text;
what cannot be a parameter (a column name, or a literal in a query shown to users) is quoted here, once."""

from __future__ import annotations


def ident(name: str) -> str:
    """A quoted identifier: any column name, whatever its quotes, spaces or letters."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A quoted string literal (standard SQL: a quote is doubled; DuckDB gives backslashes no meaning)."""
    return "'" + text.replace("'", "''") + "'"

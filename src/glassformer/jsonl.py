"""Rows of a JSONL file, each with the `path:line` that error messages name.

The data loaders (evaluation texts and multiple choice, SFT chats, preference pairs, training
documents) all read JSONL the same way: blank lines are skipped, and a line that is not JSON
stops the read with a ValueError naming the file and line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["jsonl_rows"]


def jsonl_rows(path: str | os.PathLike[str]) -> Iterator[tuple[int, str, Any]]:
    """(line number, "path:line", parsed value) for each non-blank line of `path`."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg})") from err
            yield lineno, where, row

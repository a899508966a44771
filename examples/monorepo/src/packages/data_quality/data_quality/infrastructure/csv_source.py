"""Adapter: records from a CSV file (the header row names the columns)."""

import csv
from pathlib import Path
from typing import Dict, Iterator


def read_records(path: Path) -> Iterator[Dict[str, str]]:
    """Yields the rows of the UTF-8 CSV file at `path` as dicts keyed by the header."""
    with path.open(newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)

"""The report as data: sections of paragraphs, tables and images, rendered twice (md, html).

A block that is a str is a paragraph; "**x**" is a sub-heading; lines all starting "- " are a
list. `Table.notes` rows are shown under the row they follow (a combined figure's sources).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]
    # indexes of rows that detail the row above them (rendered indented / smaller)
    detail_rows: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Image:
    name: str  # file name under charts/
    alt: str
    png: bytes


Block = str | Table | Image


@dataclass
class Section:
    key: str  # stable id (HTML anchor, tests)
    title: str
    blocks: list[Block] = field(default_factory=list)

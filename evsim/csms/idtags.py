"""The central system's id tags and what Authorize, StartTransaction and StopTransaction answer
for them (OCPP 1.6 §4.2, §4.8, §4.10; IdTagInfo §7.37). Pure: no I/O but reading the CSV file,
and the time of day comes from the caller.

With a list in force, a tag answers its status; Accepted becomes Expired once its expiryDate has
passed, and ConcurrentTx while it already has a transaction open; an unknown tag is Invalid.
Without a list (no ``--id-tags`` and no tag kept), every tag is Accepted. Tags compare without ASCII letter case (OCPP's CiString,
as the MemoryBank's id_tags table does).
"""
from __future__ import annotations

import csv
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Optional

from evsim.bank.idtags import STORED_STATUSES
from evsim.timefmt import ocpp_time, parse_timestamp

#: The file's columns, in order (OCPP's own names).
CSV_COLUMNS = ("idTag", "status", "expiryDate", "parentIdTag")
#: IdToken is CiString20Type.
MAX_ID_TAG = 20
#: Open transactions remembered for ConcurrentTx (a charge point that never stops one must not
#: grow the process without bound).
OPEN_KEPT = 100_000
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def key(id_tag: str) -> str:
    """What two spellings of one tag have in common (SQLite's NOCASE folds ASCII only)."""
    return id_tag.translate(_ASCII_LOWER)


@dataclass(frozen=True)
class IdTag:
    id_tag: str
    status: str = "Accepted"
    expiry_date: Optional[datetime] = None
    parent_id_tag: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        """As the control API shows it (OCPP's names and time format)."""
        return {"idTag": self.id_tag, "status": self.status,
                "expiryDate": ocpp_time(self.expiry_date) if self.expiry_date else None,
                "parentIdTag": self.parent_id_tag}

    def to_row(self) -> dict[str, Any]:
        """As MemoryBank.put_id_tag takes it."""
        return {"id_tag": self.id_tag, "status": self.status, "expiry_date": self.expiry_date,
                "parent_id_tag": self.parent_id_tag}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> IdTag:
        expiry = row.get("expiry_date")
        return cls(row["id_tag"], row["status"], parse_timestamp(expiry) if expiry else None,
                   row.get("parent_id_tag"))


def check_id_tag(text: Any, what: str = "idTag") -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} must be a non-empty string")
    if text != text.strip():
        raise ValueError(f"{what} {text!r} has spaces around it")
    if len(text) > MAX_ID_TAG:
        raise ValueError(f"{what} {text!r} is longer than {MAX_ID_TAG} characters")
    return text


def parse_status(text: Any) -> str:
    """A stored status, in any letter case."""
    for status in STORED_STATUSES:
        if isinstance(text, str) and text.strip().lower() == status.lower():
            return status
    raise ValueError(f"status must be one of {', '.join(STORED_STATUSES)}, got {text!r}")


def parse_expiry(text: Any) -> Optional[datetime]:
    """An ISO-8601 time (UTC unless it has an offset); empty or None is no expiry."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        return parse_timestamp(text.strip())
    except (AttributeError, ValueError):
        raise ValueError(f"expiryDate {text!r} is not an ISO-8601 time "
                         f"(2026-12-31T23:59:59Z)") from None


def read_csv(lines: Iterable[str], name: str) -> list[IdTag]:
    """The tags of a CSV text ``idTag,status,expiryDate,parentIdTag``: a header row is
    optional, blank lines and lines starting with ``#`` are skipped, empty cells are the
    defaults (Accepted, no expiry, no parent). ValueError names the file and the line."""
    tags: list[IdTag] = []
    seen: dict[str, int] = {}
    for number, cells in _rows(lines):
        try:
            if len(cells) > len(CSV_COLUMNS):
                raise ValueError(f"{len(cells)} columns; expected at most {len(CSV_COLUMNS)}: "
                                 f"{','.join(CSV_COLUMNS)}")
            cells = [cell.strip() for cell in cells] + [""] * (len(CSV_COLUMNS) - len(cells))
            id_tag, status, expiry, parent = cells
            tag = IdTag(check_id_tag(id_tag), parse_status(status or "Accepted"),
                        parse_expiry(expiry), check_id_tag(parent, "parentIdTag") if parent
                        else None)
            if key(tag.id_tag) in seen:
                raise ValueError(f"idTag {tag.id_tag!r} again (first on line "
                                 f"{seen[key(tag.id_tag)]})")
        except ValueError as exc:
            raise ValueError(f"{name} line {number}: {exc}") from None
        seen[key(tag.id_tag)] = number
        tags.append(tag)
    return tags


def _rows(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(lines)
    first = True
    try:
        for cells in reader:
            if not cells or not "".join(cells).strip() or cells[0].lstrip().startswith("#"):
                continue
            if first and cells[0].strip() == CSV_COLUMNS[0]:
                first = False
                continue
            first = False
            yield reader.line_num, cells
    except csv.Error as exc:
        raise ValueError(f"line {reader.line_num}: {exc}") from None


def load_csv(path: str | os.PathLike) -> list[IdTag]:
    """:func:`read_csv` of a file; ValueError (one line) if it cannot be read."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            return read_csv(file, str(path))
    except OSError as exc:
        raise ValueError(f"cannot read id tags from {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None


def changed(current: Optional[IdTag], id_tag: str, body: Any) -> IdTag:
    """The tag a control-API PUT makes: the body's ``status``, ``expiryDate``, ``parentIdTag``
    replace the current ones; a field not given keeps its value (a new tag: Accepted, no expiry,
    no parent); null clears expiryDate or parentIdTag. ValueError says what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    unknown = set(body) - set(CSV_COLUMNS[1:])
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}; an id tag has "
                         f"{', '.join(CSV_COLUMNS[1:])}")
    tag = replace(current, id_tag=id_tag) if current else IdTag(check_id_tag(id_tag))
    if "status" in body:
        tag = replace(tag, status=parse_status(body["status"]))
    if "expiryDate" in body:
        if body["expiryDate"] is not None and not isinstance(body["expiryDate"], str):
            raise ValueError("expiryDate must be an ISO-8601 string or null")
        tag = replace(tag, expiry_date=parse_expiry(body["expiryDate"]))
    if "parentIdTag" in body:
        parent = body["parentIdTag"]
        tag = replace(tag, parent_id_tag=None if parent is None
                      else check_id_tag(parent, "parentIdTag"))
    return tag


class IdTagList:
    """The tags in force. A list is in force when it has a tag, or when ``forced`` (it came from
    ``--id-tags``, even an empty file); otherwise every tag is Accepted, as the central system
    answered before it had a list."""

    def __init__(self, tags: Iterable[IdTag] = (), forced: bool = False) -> None:
        self._tags = {key(tag.id_tag): tag for tag in tags}
        self.forced = forced

    @property
    def enforced(self) -> bool:
        return self.forced or bool(self._tags)

    def __iter__(self) -> Iterator[IdTag]:
        return iter(sorted(self._tags.values(), key=lambda tag: tag.id_tag))

    def __len__(self) -> int:
        return len(self._tags)

    def get(self, id_tag: str) -> Optional[IdTag]:
        return self._tags.get(key(id_tag))

    def put(self, tag: IdTag) -> None:
        """Create or change a tag (the list is then in force)."""
        self._tags[key(tag.id_tag)] = tag

    def delete(self, id_tag: str) -> bool:
        return self._tags.pop(key(id_tag), None) is not None

    def answer(self, id_tag: str, now: datetime, in_transaction: bool = False) -> dict[str, Any]:
        """The IdTagInfo for ``id_tag`` at ``now``; ``in_transaction``: it has a transaction
        open already (Authorize, StartTransaction), so an Accepted tag is ConcurrentTx."""
        if not self.enforced:
            return {"status": "Accepted"}
        tag = self.get(id_tag)
        if tag is None:
            return {"status": "Invalid"}
        status = tag.status
        if status == "Accepted" and tag.expiry_date is not None and tag.expiry_date <= now:
            status = "Expired"
        if status == "Accepted" and in_transaction:
            status = "ConcurrentTx"
        info: dict[str, Any] = {"status": status}
        if tag.expiry_date is not None:
            info["expiryDate"] = ocpp_time(tag.expiry_date)
        if tag.parent_id_tag:
            info["parentIdTag"] = tag.parent_id_tag
        return info


class OpenTransactions:
    """Which id tag each open transaction was accepted for, to answer ConcurrentTx; the oldest
    are forgotten beyond ``size``."""

    def __init__(self, size: int = OPEN_KEPT) -> None:
        self.size = size
        self._tags: OrderedDict[int, str] = OrderedDict()
        self._counts: dict[str, int] = {}

    def opened(self, transaction_id: int, id_tag: str) -> None:
        self.closed(transaction_id)
        self._tags[transaction_id] = key(id_tag)
        self._counts[key(id_tag)] = self._counts.get(key(id_tag), 0) + 1
        if len(self._tags) > self.size:
            self.closed(next(iter(self._tags)))

    def closed(self, transaction_id: int) -> None:
        tag = self._tags.pop(transaction_id, None)
        if tag is not None:
            self._counts[tag] -= 1
            if not self._counts[tag]:
                del self._counts[tag]

    def busy(self, id_tag: str) -> bool:
        """Whether ``id_tag`` has a transaction open."""
        return key(id_tag) in self._counts


"""Id tags: the pure rules of evsim.csms.idtags (answers, the CSV file, the API's changes, the
open transactions), the list loaded at start, and the five answers a charge point written with
the ``ocpp`` library gets through Authorize and StartTransaction, the list changed through the
control API and kept in the MemoryBank across a restart."""
from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from csms_harness import Site
from ocpp.charge_point import snake_to_camel_case
from ocpp.v16 import call

from evsim import cli
from evsim.bank import MemoryBank
from evsim.clock import FakeClock
from evsim.csms import control
from evsim.csms.idtags import (
    IdTag,
    IdTagList,
    OpenTransactions,
    changed,
    load_csv,
    read_csv,
)
from evsim.csms.server import CentralSystem

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=30)


# -- the answers ---------------------------------------------------------------------------------

def test_without_a_list_every_tag_is_accepted():
    tags = IdTagList()
    assert not tags.enforced
    assert tags.answer("ANYONE", NOW) == {"status": "Accepted"}
    assert tags.answer("ANYONE", NOW, in_transaction=True) == {"status": "Accepted"}


def test_the_five_answers_with_expiry_and_parent():
    tags = IdTagList([IdTag("OK", "Accepted", LATER, "GROUP"), IdTag("NO", "Blocked"),
                      IdTag("OLD", "Expired"), IdTag("DUE", "Accepted", NOW),
                      IdTag("GONE", "Invalid")])
    assert tags.enforced
    assert tags.answer("OK", NOW) == {"status": "Accepted", "expiryDate": "2026-07-01T12:00:00.000Z",
                                      "parentIdTag": "GROUP"}
    assert tags.answer("ok", NOW)["status"] == "Accepted"  # CiString: no letter case
    assert tags.answer("NO", NOW) == {"status": "Blocked"}
    assert tags.answer("OLD", NOW) == {"status": "Expired"}
    assert tags.answer("DUE", NOW - timedelta(seconds=1))["status"] == "Accepted"
    assert tags.answer("DUE", NOW) == {"status": "Expired",
                                       "expiryDate": "2026-06-01T12:00:00.000Z"}
    assert tags.answer("GONE", NOW) == {"status": "Invalid"}
    assert tags.answer("UNKNOWN", NOW) == {"status": "Invalid"}
    assert tags.answer("OK", NOW, in_transaction=True)["status"] == "ConcurrentTx"
    assert tags.answer("NO", NOW, in_transaction=True)["status"] == "Blocked"
    assert tags.answer("DUE", NOW, in_transaction=True)["status"] == "Expired"


def test_a_list_is_in_force_while_it_has_a_tag_or_came_from_a_file():
    tags = IdTagList()
    tags.put(IdTag("A"))
    tags.put(IdTag("B"))
    assert tags.enforced and tags.answer("C", NOW)["status"] == "Invalid"
    tags.put(IdTag("a", "Blocked"))  # the same tag, spelled otherwise
    assert len(tags) == 2 and tags.get("A").status == "Blocked"
    assert tags.delete("A") and not tags.delete("A")
    assert tags.answer("A", NOW)["status"] == "Invalid"
    assert tags.delete("B") and not tags.enforced  # no list left: Accepted for all
    assert tags.answer("A", NOW)["status"] == "Accepted"
    assert IdTagList([], forced=True).answer("ANYONE", NOW) == {"status": "Invalid"}


def test_open_transactions_make_a_tag_busy_until_they_close_and_are_bounded():
    open_tags = OpenTransactions(size=2)
    open_tags.opened(1, "TAG")
    open_tags.opened(2, "tag")
    assert open_tags.busy("Tag")
    open_tags.closed(1)
    assert open_tags.busy("TAG")
    open_tags.closed(2)
    open_tags.closed(99)
    assert not open_tags.busy("TAG")
    for transaction_id in (3, 4, 5):
        open_tags.opened(transaction_id, f"T{transaction_id}")
    assert not open_tags.busy("T3") and open_tags.busy("T4") and open_tags.busy("T5")


def test_the_central_system_answers_expired_by_its_clock():
    clock = FakeClock(start=NOW)
    system = CentralSystem(None, cli.Supervisor(), clock, scenario="none",
                           id_tags=IdTagList([IdTag("T", expiry_date=NOW + timedelta(hours=1))]))
    assert system.authorize("T").id_tag_info["status"] == "Accepted"
    clock._wall = 3600.0  # an hour on (advance() needs a running loop)
    assert system.authorize("T").id_tag_info["status"] == "Expired"


# -- the file ------------------------------------------------------------------------------------

def test_the_csv_file_with_header_comments_and_defaults():
    text = ["idTag,status,expiryDate,parentIdTag\n", "# a comment\n", "\n",
            "04A2B3C4,Accepted,2027-01-01T00:00:00Z,FLEET\n", "BLOCKED1, blocked ,,\n",
            "PLAIN\n", "ZONED,ACCEPTED,2027-01-01T01:00:00+01:00\n"]
    tags = read_csv(text, "tags.csv")
    assert tags == [IdTag("04A2B3C4", "Accepted", datetime(2027, 1, 1, tzinfo=UTC), "FLEET"),
                    IdTag("BLOCKED1", "Blocked"), IdTag("PLAIN"),
                    IdTag("ZONED", "Accepted", datetime(2027, 1, 1, tzinfo=UTC))]
    assert read_csv(["A,Blocked\n"], "no-header.csv") == [IdTag("A", "Blocked")]


@pytest.mark.parametrize(("lines", "message"), [
    (["A,Maybe\n"], "tags.csv line 1: status must be one of Accepted, Blocked, Expired, Invalid, "
                    "got 'Maybe'"),
    (["idTag,status\n", "A,Accepted,tomorrow\n"], "tags.csv line 2: expiryDate 'tomorrow' is not "
                                                  "an ISO-8601 time (2026-12-31T23:59:59Z)"),
    (["ABCDEFGHIJKLMNOPQRSTUVWXYZ\n"], "tags.csv line 1: idTag 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' is "
                                       "longer than 20 characters"),
    (["A\n", "B\n", "a,Blocked\n"], "tags.csv line 3: idTag 'a' again (first on line 1)"),
    (["A,Accepted,,P,extra\n"], "tags.csv line 1: 5 columns; expected at most 4: "
                                "idTag,status,expiryDate,parentIdTag"),
    ([",Accepted\n"], "tags.csv line 1: idTag must be a non-empty string"),
])
def test_a_bad_line_is_named(lines, message):
    with pytest.raises(ValueError) as error:
        read_csv(lines, "tags.csv")
    assert str(error.value) == message


def test_a_file_that_cannot_be_read_is_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"cannot read id tags from .*missing.csv: No such file"):
        load_csv(tmp_path / "missing.csv")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00A")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        load_csv(binary)


# -- the API's changes ----------------------------------------------------------------------------

def test_a_change_keeps_what_it_does_not_name_and_null_clears():
    created = changed(None, "NEW", {})
    assert created == IdTag("NEW")
    tag = changed(created, "NEW", {"status": "blocked", "expiryDate": "2027-01-01T00:00:00Z",
                                   "parentIdTag": "G"})
    assert tag == IdTag("NEW", "Blocked", datetime(2027, 1, 1, tzinfo=UTC), "G")
    assert changed(tag, "NEW", {"status": "Accepted"}) == IdTag(
        "NEW", "Accepted", datetime(2027, 1, 1, tzinfo=UTC), "G")
    assert changed(tag, "new", {"expiryDate": None, "parentIdTag": None}) == IdTag("new",
                                                                                   "Blocked")


@pytest.mark.parametrize(("body", "message"), [
    ([], "the body must be a JSON object"),
    ({"colour": "red"}, "unknown field(s) colour; an id tag has status, expiryDate, parentIdTag"),
    ({"status": "ConcurrentTx"}, "status must be one of Accepted, Blocked, Expired, Invalid, "
                                 "got 'ConcurrentTx'"),
    ({"expiryDate": 5}, "expiryDate must be an ISO-8601 string or null"),
    ({"parentIdTag": ""}, "parentIdTag must be a non-empty string"),
])
def test_a_bad_change_says_why(body, message):
    with pytest.raises(ValueError) as error:
        changed(None, "T", body)
    assert str(error.value) == message


# -- the list at start ----------------------------------------------------------------------------

def test_the_file_replaces_the_stored_list_and_without_it_the_stored_one_holds(tmp_path,
                                                                                caplog):
    db = str(tmp_path / "bank.db")
    with MemoryBank(db) as bank:
        bank.put_id_tag("FROM_API", "Blocked")
    assert control.load_id_tags(db, None).get("FROM_API").status == "Blocked"
    listed = tmp_path / "tags.csv"
    listed.write_text("idTag,status,expiryDate,parentIdTag\nA,Accepted,,\nB,Blocked,,\n")
    with caplog.at_level(logging.WARNING, logger="csms"):
        tags = control.load_id_tags(db, str(listed), scenario_tag="SIMULATOR")
    assert tags.enforced and [tag.id_tag for tag in tags] == ["A", "B"]
    assert "the scenario's tag SIMULATOR is not in the list" in caplog.text
    with MemoryBank(db, readonly=True) as bank:
        assert [row["id_tag"] for row in bank.get_id_tags()] == ["A", "B"]
    empty = tmp_path / "empty.csv"
    empty.write_text("idTag,status,expiryDate,parentIdTag\n")
    assert control.load_id_tags(db, str(empty)).enforced
    assert not control.load_id_tags(db, None).enforced  # nothing stored now: Accepted for all
    bad = tmp_path / "bad.csv"
    bad.write_text("A,Sometimes\n")
    with pytest.raises(cli.UsageError, match=r"--id-tags: .*bad.csv line 1: status must be"):
        control.load_id_tags(db, str(bad))


# -- through a charge point and the API -----------------------------------------------------------

async def authorize(cp, id_tag: str) -> dict:
    """The idTagInfo as the wire had it (the library hands it over in snake case)."""
    return snake_to_camel_case((await cp.call(call.Authorize(id_tag=id_tag))).id_tag_info)


async def start(cp, id_tag: str, connector_id: int = 1, meter_start: int = 0):
    return await cp.call(call.StartTransaction(connector_id=connector_id, id_tag=id_tag,
                                               meter_start=meter_start,
                                               timestamp="2026-01-01T00:00:00Z"))


async def test_authorize_and_start_transaction_answer_all_five_statuses(db_path):
    central = await Site(db_path).start()
    try:
        cp = await central.connect("CP_1")
        assert (await authorize(cp, "ANYONE"))["status"] == "Accepted"  # no list yet
        for tag, body in (("OK", {"expiryDate": "2099-01-01T00:00:00Z", "parentIdTag": "FLEET"}),
                          ("STOLEN", {"status": "Blocked"}), ("OLD", {"status": "Expired"}),
                          ("LAPSED", {"expiryDate": "2020-01-01T00:00:00Z"})):
            status, answer = await central.request("PUT", f"/id-tags/{tag}", body)
            assert (status, answer["status"]) == (201, "created"), tag
        assert await authorize(cp, "OK") == {"status": "Accepted",
                                             "expiryDate": "2099-01-01T00:00:00.000Z",
                                             "parentIdTag": "FLEET"}
        assert (await authorize(cp, "STOLEN"))["status"] == "Blocked"
        assert (await authorize(cp, "OLD"))["status"] == "Expired"
        assert await authorize(cp, "LAPSED") == {"status": "Expired",
                                                 "expiryDate": "2020-01-01T00:00:00.000Z"}
        assert (await authorize(cp, "ANYONE"))["status"] == "Invalid"
        assert (await start(cp, "STOLEN")).id_tag_info["status"] == "Blocked"
        first = await start(cp, "OK")
        assert first.id_tag_info["status"] == "Accepted"
        assert (await authorize(cp, "ok"))["status"] == "ConcurrentTx"
        assert (await start(cp, "OK")).transaction_id == first.transaction_id  # a repeat
        second = await start(cp, "OK", connector_id=2)
        assert second.id_tag_info["status"] == "ConcurrentTx"
        assert second.transaction_id != first.transaction_id  # 1.6 gives an id all the same
        stopped = await cp.call(call.StopTransaction(
            meter_stop=10, timestamp="2026-01-01T00:10:00Z", transaction_id=first.transaction_id,
            id_tag="OK"))
        assert stopped.id_tag_info["status"] == "Accepted"
        assert (await authorize(cp, "OK"))["status"] == "Accepted"
        answers = [e["description"] for e in await central.events("AUTHORIZE", 8)]
        assert answers[-1] == "Authorize: idTag OK: Accepted"
    finally:
        await central.stop()


async def test_the_api_keeps_the_list_in_the_memory_bank_across_a_restart(db_path, tmp_path):
    central = await Site(db_path).start()
    try:
        assert await central.request("GET", "/id-tags") == (200, {"enforced": False,
                                                                   "idTags": []})
        await central.request("PUT", "/id-tags/A", {"parentIdTag": "G"})
        status, answer = await central.request("PUT", "/id-tags/A", {"status": "Blocked"})
        assert (status, answer) == (200, {"status": "updated", "idTag": {
            "idTag": "A", "status": "Blocked", "expiryDate": None, "parentIdTag": "G"}})
        await central.request("PUT", "/id-tags/B", {})
        status, answer = await central.request("PUT", "/id-tags/B", {"status": "Sometimes"})
        assert status == 400 and answer["reason"].startswith("status must be one of")
        assert (await central.request("PUT", "/id-tags/" + "X" * 21, {}))[0] == 400
        assert (await central.request("GET", "/id-tags/B"))[1]["status"] == "Accepted"
        assert (await central.request("DELETE", "/id-tags/B"))[0] == 200
        assert (await central.request("DELETE", "/id-tags/B"))[0] == 404
        assert (await central.request("GET", "/id-tags/B"))[0] == 404
    finally:
        await central.stop()
    with MemoryBank(db_path, readonly=True) as bank:
        assert [(t["id_tag"], t["status"], t["parent_id_tag"]) for t in bank.get_id_tags()] == \
            [("A", "Blocked", "G")]
    central = await Site(db_path).start()  # a restart without --id-tags keeps it
    try:
        status, answer = await central.request("GET", "/id-tags")
        assert answer["enforced"] and [t["idTag"] for t in answer["idTags"]] == ["A"]
        cp = await central.connect("CP_1")
        assert (await authorize(cp, "A")) == {"status": "Blocked", "parentIdTag": "G"}
        assert (await authorize(cp, "B"))["status"] == "Invalid"
    finally:
        await central.stop()
    listed = tmp_path / "tags.csv"
    listed.write_text("C,Accepted\n")
    central = await Site(db_path, id_tags_file=str(listed)).start()  # the file replaces it
    try:
        cp = await central.connect("CP_1")
        assert (await authorize(cp, "A"))["status"] == "Invalid"
        assert (await authorize(cp, "C"))["status"] == "Accepted"
    finally:
        await central.stop()

"""cp.py on security profiles 1-3: against servers that are not ours, and against the central
system through a key rotation and a refusal (real processes, real TLS on loopback)."""
from __future__ import annotations

import asyncio
import ssl

import pytest
from conftest import script, start, stop
from conftest import wait_for_async as until
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from ocpp_helpers import now_iso
from websockets.asyncio.client import connect
from websockets.asyncio.server import basic_auth, serve
from websockets.headers import build_authorization_basic

from evsim import cli
from evsim.bank import MemoryBank
from evsim.bank.writer import BankWriter
from evsim.clock import Clock
from evsim.csms.gate import Gate
from evsim.csms.security import ChargePointRegistry, Throttle
from evsim.csms.server import CentralSystem
from evsim.csms.server import serve as csms_serve
from evsim.security import pki
from evsim.security import site as secure_site

KEY = "0123456789abcdefXYZ!"
NEW_KEY = "fedcba9876543210zyx?"
NO_BUS = ("--can-interface", "remote", "--can-channel", "ws://127.0.0.1:1/")


class Central(ChargePoint):
    """A central system written with the ocpp library only: it accepts every boot."""

    def __init__(self, id, connection, booted: list):
        super().__init__(id, connection, response_timeout=30)
        self.booted = booted

    @on(Action.boot_notification)
    def on_boot(self, **payload):
        self.booted.append(self.id)
        return call_result.BootNotification(current_time=now_iso(), interval=60,
                                            status="Accepted")

    @on(Action.status_notification)
    def on_status(self, **payload):
        return call_result.StatusNotification()


def central_handler(booted: list, peers: list | None = None):
    async def handler(connection):
        if peers is not None:
            peers.append(connection.transport.get_extra_info("peercert"))
        await Central(connection.request.path.strip("/"), connection, booted).start()
    return handler


async def run_cp(*args: str, env: dict | None = None, db_path=None):
    return start(script("cp.py", "--db", str(db_path), *NO_BUS, *args), env=env or {})


async def test_cp_uses_basic_auth_with_a_server_not_ours(db_path):
    booted: list = []
    async with serve(central_handler(booted), "127.0.0.1", 0, subprotocols=["ocpp1.6"],
                     process_request=basic_auth(credentials=("CP_B", KEY))) as server:
        port = server.sockets[0].getsockname()[1]
        proc = await run_cp("--url", f"ws://127.0.0.1:{port}", "--id", "CP_B",
                            "--security-profile", "1", env={"EV_SIM_AUTH_KEY": KEY},
                            db_path=db_path)
        try:
            await until(lambda: booted == ["CP_B"], timeout=30, message="a boot with Basic auth")
        finally:
            code, out = await asyncio.to_thread(stop, proc)
    assert code == 0, out
    assert KEY not in out


async def test_cp_presents_its_client_certificate_to_a_server_not_ours(tmp_path, db_path):
    secure_site.make(tmp_path, 3, ["CP_C"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "csms.pem", tmp_path / "csms.key")
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(tmp_path / "ca.pem")
    booted: list = []
    peers: list = []
    async with serve(central_handler(booted, peers), "127.0.0.1", 0, subprotocols=["ocpp1.6"],
                     ssl=context) as server:
        port = server.sockets[0].getsockname()[1]
        proc = await run_cp("--url", f"wss://127.0.0.1:{port}", "--id", "CP_C",
                            "--security-profile", "3", "--ca-cert", str(tmp_path / "ca.pem"),
                            "--client-cert", str(tmp_path / "CP_C.pem"),
                            "--client-key", str(tmp_path / "CP_C.key"), db_path=db_path)
        try:
            await until(lambda: booted == ["CP_C"], timeout=30, message="a boot over TLS")
        finally:
            code, out = await asyncio.to_thread(stop, proc)
    assert code == 0, out
    assert tuple(peers[0]["subject"])[-1:] == ((("commonName", "CP_C"),),) or \
        ("commonName", "CP_C") in [name for rdn in peers[0]["subject"] for name in rdn]


class InProcessCsms:
    """The central system in the test's loop, with a profile 1 registry of CP_1."""

    def __init__(self, tmp_path, db_path) -> None:
        self.registry_path = tmp_path / "charge_points.toml"
        self.registry_path.write_text(f'[charge_points.CP_1]\nsecurity_profile = 1\n'
                                      f'authorization_key = "{KEY}"\n')
        self.db_path = db_path

    async def __aenter__(self) -> InProcessCsms:
        self.writer = BankWriter(str(self.db_path), "csms")
        self.supervisor = cli.Supervisor()
        self.system = CentralSystem(self.writer, self.supervisor, Clock(), scenario="none")
        self.system.security = ChargePointRegistry.load(self.registry_path)
        gate = Gate(self.system.security, self.refused, Throttle(base=0.01))
        self.refusals: list = []
        self.server = await csms_serve(self.system.handle, "127.0.0.1", 0, process_request=gate)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def refused(self, charge_point_id, peer, reason) -> None:
        self.refusals.append(reason)

    def link(self):
        station = self.system.registry.get("CP_1")
        return station.link if station else None

    async def __aexit__(self, *exc_info) -> None:
        self.server.close()
        await self.server.wait_closed()
        await self.supervisor.cancel()
        await asyncio.to_thread(self.writer.close)


async def test_a_rotated_key_is_used_by_the_charge_point_and_the_old_one_refused(tmp_path,
                                                                                  db_path):
    async with InProcessCsms(tmp_path, db_path) as csms:
        proc = await run_cp("--url", f"ws://127.0.0.1:{csms.port}", "--id", "CP_1",
                            "--security-profile", "1", "--speed", "10",
                            env={"EV_SIM_AUTH_KEY": KEY}, db_path=db_path)
        try:
            first = await until(csms.link, timeout=30, message="CP_1 connected with its key")
            result = await first.call(call.ChangeConfiguration(key="AuthorizationKey",
                                                               value=NEW_KEY))
            assert result.status == "Accepted"
            assert ChargePointRegistry.load(csms.registry_path).check_key("CP_1", NEW_KEY)
            await first.close_connection()
            await until(lambda: csms.link() not in (None, first), timeout=30,
                        message="CP_1 back with the new key")
            assert csms.refusals == []
            with pytest.raises(Exception) as old:
                async with connect(f"ws://127.0.0.1:{csms.port}/CP_1", subprotocols=["ocpp1.6"],
                                   additional_headers={"Authorization":
                                                       build_authorization_basic("CP_1", KEY)}):
                    pass
            assert getattr(old.value, "response", None) is not None
            assert old.value.response.status_code == 401
        finally:
            code, out = await asyncio.to_thread(stop, proc)
    assert code == 0, out
    assert KEY not in out and NEW_KEY not in out
    for path in tmp_path.iterdir():
        if path.is_file():
            assert NEW_KEY.encode() not in path.read_bytes() or path.name.startswith("cp_state")


async def test_a_refused_charge_point_says_why_and_reports_it_once_it_is_let_in(tmp_path,
                                                                                db_path):
    async with InProcessCsms(tmp_path, db_path) as csms:
        proc = await run_cp("--url", f"ws://127.0.0.1:{csms.port}", "--id", "CP_1",
                            "--security-profile", "1", "--speed", "10",
                            env={"EV_SIM_AUTH_KEY": NEW_KEY}, db_path=db_path)
        try:
            await until(lambda: csms.refusals, timeout=30, message="a refusal")
            csms.system.security.set_key("CP_1", NEW_KEY)  # as the control API would
            await until(csms.link, timeout=60, message="CP_1 let in")

            def reported():
                with MemoryBank(db_path, readonly=True) as bank:
                    return [e for e in bank.get_recent_events(None, {
                        "event_type": "OCPP_MESSAGE", "source": "csms", "charge_point_id": "CP_1"})
                        if e["data"]["action"] == "SecurityEventNotification"
                        and e["data"]["message_type"] == "CALL"
                        and e["data"]["payload"]["type"] == "FailedToAuthenticateAtCentralSystem"]
            await until(reported, timeout=30, message="SecurityEventNotification")
        finally:
            code, out = await asyncio.to_thread(stop, proc)
    assert code == 0, out
    refusals = [line for line in out.splitlines()
                if "connection to" in line and "refused the credentials (HTTP 401)" in line]
    assert len(refusals) == 1, out  # one line, not one per retry
    with MemoryBank(db_path, readonly=True) as bank:
        notified = [e for e in bank.get_recent_events(None, {
            "event_type": "OCPP_MESSAGE", "source": "csms", "charge_point_id": "CP_1"})
            if e["data"]["action"] == "SecurityEventNotification"
            and e["data"]["message_type"] == "CALL"
            and e["data"]["payload"]["type"] == "FailedToAuthenticateAtCentralSystem"]
    assert len(notified) == 1  # one notification for the outage, not one per refused retry
    assert NEW_KEY not in out
    assert pki  # certificates come from evsim.security.pki in the TLS tests


async def test_the_id_the_gate_checked_is_the_id_that_is_served(tmp_path, db_path):
    """A query string cannot make the connection another charge point than the one whose
    credentials were checked."""
    async with InProcessCsms(tmp_path, db_path) as csms:
        headers = {"Authorization": build_authorization_basic("CP_1", KEY)}
        async with connect(f"ws://127.0.0.1:{csms.port}/CP_1?/CP_X", subprotocols=["ocpp1.6"],
                           additional_headers=headers):
            await until(csms.link, timeout=30, message="CP_1 connected")
            assert csms.system.registry.get("CP_X") is None


async def test_keys_are_hashed_off_the_event_loop(tmp_path, db_path, monkeypatch):
    import threading

    from evsim.csms import security
    threads: list[str] = []
    verify = security.verify_key

    def recording(key, stored):
        threads.append(threading.current_thread().name)
        return verify(key, stored)
    monkeypatch.setattr(security, "verify_key", recording)
    async with InProcessCsms(tmp_path, db_path) as csms:
        for key in ("wrong-key-number-1", "wrong-key-number-1", KEY, KEY):
            headers = {"Authorization": build_authorization_basic("CP_1", key)}
            try:
                async with connect(f"ws://127.0.0.1:{csms.port}/CP_1",
                                   subprotocols=["ocpp1.6"], additional_headers=headers):
                    pass
            except Exception:  # noqa: BLE001 - the wrong key is refused
                pass
    assert len(threads) == 2  # once per distinct key: a repeated one is remembered
    assert threading.main_thread().name not in threads

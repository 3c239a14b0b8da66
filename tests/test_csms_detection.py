"""The central system's anomaly detection end to end in process: a CentralSystem on a FakeClock
with a real MemoryBank, driving its scenario on a charge point the test plays over a fake
connection (OCPP-J frames), sampling once a simulated second (speeds that are powers of two, so that the FakeClock's sums of steps are
exact and no step wakes the scenario a second late). A normal session raises nothing;
each fault raises one anomaly of its kind, for the right charge point and transaction."""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any, Optional

import pytest
from csms_harness import ANSWERS, Site
from test_csms_server import BOOT, FakeChargePoint, FakeConnection, answered

from evsim import cli
from evsim.bank import MemoryBank
from evsim.bank.writer import BankWriter
from evsim.clock import FakeClock, settle
from evsim.csms.analysis import STATUS_BURST, ChargePointAnalysis
from evsim.csms.server import CentralSystem
from evsim.timefmt import ocpp_time

VOLTS = 230.0


class Player:
    """Plays one charge point: answers every CALL Accepted, starts a transaction on
    RemoteStartTransaction and stops it on RemoteStopTransaction, follows the limit of the
    profiles it was sent, and sends a MeterValues (current, voltage, energy register) every
    simulated second. ``draw(limit, t)`` is the current it draws (default: the limit, with
    ``noise_a`` of noise); ``freeze_after`` stops its register that many seconds into the
    transaction; ``flap_every`` flips its status Charging/SuspendedEVSE that often."""

    def __init__(self, central: CentralSystem, clock: FakeClock, cp: FakeChargePoint, *,
                 draw: Optional[Callable[[float, float], float]] = None, noise_a: float = 2.0,
                 freeze_after: Optional[float] = None, flap_every: Optional[float] = None,
                 sample_idle: bool = False, seed: int = 1) -> None:
        self.central, self.clock, self.cp = central, clock, cp
        self.draw = draw or (lambda limit, t: limit)
        self.noise_a = noise_a
        self.freeze_after = freeze_after
        self.flap_every = flap_every
        self.sample_idle = sample_idle
        self.rng = random.Random(seed)
        self.answered = 0
        self.default_limit: Optional[float] = None
        self.tx_limit: Optional[float] = None
        self.transaction_id: Optional[int] = None
        self.into = 0.0  # seconds into the transaction
        self.energy_wh = 1000.0
        self.transactions: list[int] = []
        self.limits: list[float] = []

    @property
    def limit(self) -> float:
        if self.transaction_id is not None and self.tx_limit is not None:
            return self.tx_limit
        return self.default_limit if self.default_limit is not None else 32.0

    async def play(self, seconds: float = 10_000) -> None:
        """Until the scenario is complete (or ``seconds`` have passed)."""
        runner = self.central.registry.get(self.cp_id).runner
        for _ in range(int(seconds)):
            await self.answer_until_resting(runner)
            if runner is not None and runner.complete:
                return
            await self.second()
            await self.clock.advance(1)

    async def answer_until_resting(self, runner) -> None:
        """Answer the CALLs the scenario sends at this instant, until it rests on the clock
        again (or is done), however long this machine takes to deliver them."""
        deadline = time.monotonic() + 60
        while True:
            await self.serve()
            if runner is None or runner.complete or runner.resting:
                await self.serve()
                return
            if time.monotonic() > deadline:
                pytest.fail("the scenario did not rest within 60 s")
            await asyncio.sleep(0.001)

    @property
    def cp_id(self) -> str:
        return self.cp.connection.request.path.rsplit("/", 1)[-1]

    async def serve(self) -> None:
        for request in self.cp.requests()[self.answered:]:
            self.answered += 1
            await self.cp.answer(request, {"status": "Accepted"})
            action, payload = request[2], request[3]
            if action == "SetChargingProfile":
                profile = payload["csChargingProfiles"]
                amps = profile["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"]
                if profile["chargingProfilePurpose"] == "TxProfile":
                    self.tx_limit = amps
                else:
                    self.default_limit = amps
                self.limits.append(amps)
            elif action == "RemoteStartTransaction":
                if payload.get("chargingProfile"):
                    self.tx_limit = payload["chargingProfile"]["chargingSchedule"][
                        "chargingSchedulePeriod"][0]["limit"]
                    self.limits.append(self.tx_limit)
                await self.start()
            elif action == "RemoteStopTransaction":
                await self.stop()

    async def start(self) -> None:
        await self.status("Preparing")
        answer = await self.cp.call("StartTransaction", {
            "connectorId": 1, "idTag": "SIMULATOR", "meterStart": int(self.energy_wh),
            "timestamp": ocpp_time(self.clock.now())})
        self.transaction_id, self.into = answer[2]["transactionId"], 0.0
        self.transactions.append(self.transaction_id)
        await self.status("Charging")

    async def stop(self) -> None:
        await self.cp.call("StopTransaction", {
            "transactionId": self.transaction_id, "meterStop": int(self.energy_wh),
            "timestamp": ocpp_time(self.clock.now()), "reason": "Remote"})
        self.transaction_id, self.tx_limit = None, None
        await self.status("Finishing")
        await self.status("Available")

    async def status(self, status: str) -> None:
        await self.cp.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                                  "status": status,
                                                  "timestamp": ocpp_time(self.clock.now())})

    async def second(self) -> None:
        """One simulated second: a sample, and a status flip when it is time for one."""
        charging = self.transaction_id is not None
        if not charging and not self.sample_idle:
            return
        amps = 0.0
        if charging:
            self.into += 1
            amps = max(0.0, self.draw(self.limit, self.into) + self.rng.gauss(0, self.noise_a))
            if self.freeze_after is None or self.into < self.freeze_after:
                self.energy_wh += VOLTS * amps / 3600
            if self.flap_every and self.into % self.flap_every == 0:
                flipped = int(self.into // self.flap_every) % 2
                await self.status("SuspendedEVSE" if flipped else "Charging")
        payload: dict[str, Any] = {"connectorId": 1, "meterValue": [{
            "timestamp": ocpp_time(self.clock.now()), "sampledValue": [
                {"value": f"{amps:.2f}", "measurand": "Current.Import", "unit": "A"},
                {"value": f"{VOLTS:.1f}", "measurand": "Voltage", "unit": "V"},
                {"value": f"{self.energy_wh:.3f}", "measurand": "Energy.Active.Import.Register",
                 "unit": "Wh"}]}]}
        if charging:
            payload["transactionId"] = self.transaction_id
        await self.cp.call("MeterValues", payload)


class DetectionSite:
    """A CentralSystem with a real MemoryBank on a FakeClock, and the player of one charge
    point."""

    def __init__(self, db_path, scenario: str, cycles: int, speed: float) -> None:
        self.db_path = db_path
        self.clock = FakeClock(speed)
        self.writer = BankWriter(str(db_path), "csms", self.clock.now)
        self.supervisor = cli.Supervisor()
        self.system = CentralSystem(self.writer, self.supervisor, self.clock, scenario=scenario,
                                    cycles=cycles)

    async def connect(self, charge_point_id: str, **options: Any) -> Player:
        connection = FakeConnection(f"/{charge_point_id}")
        task = asyncio.create_task(self.system.handle(connection))
        await settle()
        cp = FakeChargePoint(connection, task)
        await cp.call("BootNotification", BOOT)
        return Player(self.system, self.clock, cp, **options)

    async def finish(self) -> list[dict]:
        """Shut down as csms.py does (open episodes end); the anomalies recorded, oldest
        first."""
        self.system.shutdown()
        await self.supervisor.cancel()
        assert self.supervisor.failure is None
        self.writer.close()
        with MemoryBank(self.db_path, readonly=True) as bank:
            return list(reversed(bank.get_anomalies(None)))


@pytest.fixture
def detection(db_path):
    made: list[DetectionSite] = []

    def make(scenario: str = "normal", cycles: int = 30, speed: float = 8.0) -> DetectionSite:
        made.append(DetectionSite(db_path, scenario, cycles, speed))
        return made[-1]
    yield make
    for site in made:
        site.writer.close()


def kinds(anomalies: list[dict]) -> list[tuple]:
    return [(a["anomaly_type"], a["charge_point_id"], a["transaction_id"]) for a in anomalies]


@pytest.mark.parametrize("speed", [1.0, 8.0])
async def test_a_normal_session_curtailed_once_and_followed_raises_nothing(detection, speed):
    site = detection(speed=speed)
    player = await site.connect("CP_N")
    await player.play()
    analysis = site.system.registry.get("CP_N").analyser
    assert player.limits == [32.0, 16.0, 32.0] and len(player.transactions) == 1
    assert analysis.samples >= 230 and analysis.dropped == 0
    assert await site.finish() == []


async def test_over_current_is_one_anomaly_of_its_transaction(detection):
    site = detection()
    player = await site.connect("CP_O", draw=lambda limit, t: limit * 1.3)
    await player.play()
    anomalies = await site.finish()
    assert kinds(anomalies) == [("OVER_CURRENT", "CP_O", player.transactions[0])]
    assert anomalies[0]["expected_value"] == 32.0 and anomalies[0]["current_value"] > 38


async def test_a_lowered_limit_not_followed_is_profile_ignored(detection):
    site = detection()
    player = await site.connect("CP_I", draw=lambda limit, t: 32.0)
    await player.play()
    anomalies = await site.finish()
    assert kinds(anomalies) == [("PROFILE_IGNORED", "CP_I", player.transactions[0])]
    assert anomalies[0]["expected_value"] == 16.0


async def test_a_frozen_register_is_one_meter_freeze(detection):
    site = detection()
    player = await site.connect("CP_F", freeze_after=100)
    await player.play()
    anomalies = await site.finish()
    assert kinds(anomalies) == [("METER_FREEZE", "CP_F", player.transactions[0])]
    assert "ended" in anomalies[0]["description"]  # with its session
    assert anomalies[0]["end_time"] > anomalies[0]["timestamp"]


async def test_a_flapping_status_is_one_status_flapping(detection):
    site = detection()
    player = await site.connect("CP_S", flap_every=5)
    await player.play()
    anomalies = await site.finish()
    assert [k for k in kinds(anomalies) if k[0] == "STATUS_FLAPPING"] == \
        [("STATUS_FLAPPING", "CP_S", player.transactions[0])]


@pytest.mark.parametrize("speed", [1.0, 16.0])
async def test_the_fluctuation_scenario_records_its_fluctuation_and_pattern(detection, speed):
    site = detection(scenario="fluctuation", cycles=10, speed=speed)
    player = await site.connect("CP_1", noise_a=0.0, sample_idle=True,
                                draw=lambda limit, t: min(limit, 36.0))
    await player.play()
    assert len(player.transactions) == 10
    anomalies = await site.finish()
    with MemoryBank(site.db_path, readonly=True) as bank:
        patterns = bank.get_patterns()
    assert [(a["anomaly_type"], a["charge_point_id"]) for a in anomalies] == \
        [("CURRENT_FLUCTUATION", "CP_1")]
    # decided between sessions or in one: the episode spans ten of them
    assert anomalies[0]["transaction_id"] in (None, *player.transactions)
    assert anomalies[0]["description"].startswith("current fluctuation ended")
    (pattern,) = patterns
    assert pattern["occurrences"] == 1 and anomalies[0]["pattern"]["name"] == pattern["name"]
    assert 7 < pattern["parameters"]["period_s"]["mean"] < 9
    assert pattern["parameters"]["swings"]["mean"] == anomalies[0]["pattern"]["swings"] > 3


async def test_the_control_apis_profiles_set_the_limit_the_analysis_holds(db_path):
    """Through the real control API and a library charge point: a profile set or cleared and
    Accepted moves the limit; one Rejected does not."""
    site = await Site(db_path).start()
    try:
        answers = {**ANSWERS, "ClearChargingProfile": {"status": "Accepted"}}
        await site.connect("CP_A", answers=answers)
        limits = site.system.registry.get("CP_A").analyser.site.detectors.limits
        profile = {"chargingProfileId": 9, "stackLevel": 0, "chargingProfilePurpose":
                   "TxDefaultProfile", "chargingProfileKind": "Relative", "chargingSchedule": {
                       "chargingRateUnit": "W", "chargingSchedulePeriod": [
                           {"startPeriod": 0, "limit": 2300.0}]}}
        body = {"connectorId": 1, "csChargingProfiles": profile}
        assert (await site.request("POST", "/charge-points/CP_A/set-charging-profile",
                                   body))[0] == 200
        assert limits.limit == 10.0  # 2300 W at 230 V
        assert (await site.request("POST", "/charge-points/CP_A/clear-charging-profile",
                                   {"id": 9}))[0] == 200
        assert limits.limit is None
        rejected = {**answers, "SetChargingProfile": {"status": "Rejected"}}
        await site.connect("CP_B", answers=rejected)
        assert (await site.request("POST", "/charge-points/CP_B/set-charging-profile",
                                   body))[0] == 200
        assert site.system.registry.get("CP_B").analyser.site.detectors.limits.limit is None
    finally:
        await site.stop()


async def test_a_short_normal_session_is_curtailed_too_and_raises_nothing(detection):
    """Two cycles' worth (16 s): the curtailment comes too soon after the start to be judged,
    and nothing is raised."""
    site = detection(cycles=2)
    player = await site.connect("CP_W")
    await answered(lambda: player.cp.requests(), "the RemoteStartTransaction")
    await player.play()
    assert [r[2] for r in player.cp.requests()] == [
        "RemoteStartTransaction", "SetChargingProfile", "SetChargingProfile",
        "RemoteStopTransaction"]
    assert await site.finish() == []


def test_what_a_charge_point_floods_or_sends_of_another_connector_stays_bounded():
    clock = FakeClock()
    analysis = ChargePointAnalysis("CP", None, clock)
    analysis.transaction_started(1, 5, "2026-01-01T00:00:00Z")
    found = [f for n in range(1000)
             for f in analysis.status(1, "Charging" if n % 2 else "SuspendedEVSE")]
    assert len(analysis.site.detectors.flapping._changes) <= STATUS_BURST
    assert [(f.anomaly_type, f.kind, f.transaction_id) for f in found] == \
        [("STATUS_FLAPPING", "started", 5)]
    meter_value = [{"timestamp": "2026-01-01T00:00:01Z", "sampled_value": [
        {"value": "16", "measurand": "Current.Import"}]}]
    assert analysis.meter_values(2, meter_value, 5) == [] and analysis.samples == 0
    assert analysis.status(0, "Faulted") == [] and analysis.site.status == "Charging"
    assert analysis.transaction_started(2, 6, "2026-01-01T00:00:02Z") == []
    assert analysis.site.transaction_id == 5

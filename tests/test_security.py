"""Security profiles 1-3 (OCPP 1.6 Security Whitepaper): the registry, the check at the upgrade,
and real TLS on loopback against csms.py, with clients written in the test."""
from __future__ import annotations

import http
import json
import ssl
import subprocess
import sys

import pytest
import websockets
from conftest import free_port, port_open, script, start, stop, wait_for
from ocpp.v16 import ChargePoint, call
from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.headers import build_authorization_basic

from evsim.bank import MemoryBank
from evsim.csms.gate import Gate, charge_point_id_of
from evsim.csms.security import (
    ChargePointRegistry,
    RegistryError,
    Throttle,
    check_key,
    hash_key,
    verify_key,
)
from evsim.security import pki
from evsim.security import site as secure_site

KEY = "0123456789abcdefXYZ!"
OTHER_KEY = "a-very-different-key"


# -- keys, the registry, the throttle (pure) --------------------------------------------------

@pytest.mark.parametrize("key, ok", [("x" * 15, False), ("x" * 16, True), ("x" * 20, True),
                                     ("x" * 21, False), ("ab" * 16, True), ("ab" * 20, True),
                                     ("ab" * 20 + "a", False), ("xy" * 16, False)])
def test_an_authorization_key_is_16_to_20_characters_or_32_to_40_hex_digits(key, ok):
    if ok:
        check_key(key)
    else:
        with pytest.raises(ValueError, match="16 to 20 characters"):
            check_key(key)


def test_a_hashed_key_verifies_only_the_key():
    stored = hash_key(KEY, iterations=1000)
    assert KEY not in stored and verify_key(KEY, stored)
    assert not verify_key(OTHER_KEY, stored)
    assert not verify_key(KEY, "pbkdf2_sha256$1000$not-base64$x")
    assert hash_key(KEY) != hash_key(KEY)  # salted


def registry_file(tmp_path, text: str):
    path = tmp_path / "charge_points.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("[charge_points.CP_1\n", "is not valid TOML"),
    ("x = 1\n", "no [charge_points.<id>] tables"),
    ("[charge_points.CP_1]\nsecurity_profile = 4\n", "security_profile must be 0, 1, 2 or 3"),
    ("[charge_points.CP_1]\nsecurity_profile = 1\n", "needs an authorization key"),
    ('[charge_points.CP_1]\nsecurity_profile = 1\nauthorization_key = "short"\n',
     "16 to 20 characters"),
    ('[charge_points.CP_1]\nsecurity_profile = 1\nauthorization_key_hash = "plain"\n',
     "not a value csms.py --hash-key printed"),
    ("[charge_points.CP_1]\nsecurity_profile = 3\ncolour = 1\n", "unknown field(s) colour"),
])
def test_a_registry_it_cannot_use_is_one_line_naming_the_file(tmp_path, text, message):
    with pytest.raises(RegistryError) as error:
        ChargePointRegistry.load(registry_file(tmp_path, text))
    assert message in str(error.value) and "charge_points.toml" in str(error.value)
    assert "\n" not in str(error.value) and "short" not in str(error.value).split(":")[-1]


def test_a_rotated_key_is_kept_hashed_across_a_restart(tmp_path):
    path = registry_file(tmp_path, f'[charge_points.CP_1]\nsecurity_profile = 1\n'
                                   f'authorization_key = "{KEY}"\n')
    registry = ChargePointRegistry.load(path)
    assert registry.check_key("CP_1", KEY)
    registry.set_key("CP_1", OTHER_KEY)
    with pytest.raises(KeyError):
        registry.set_key("CP_9", OTHER_KEY)
    with pytest.raises(ValueError):
        registry.set_key("CP_1", "short")
    again = ChargePointRegistry.load(path)
    assert again.check_key("CP_1", OTHER_KEY) and not again.check_key("CP_1", KEY)
    kept = (tmp_path / "charge_points.toml.keys")
    assert OTHER_KEY not in kept.read_text() and oct(kept.stat().st_mode)[-3:] == "600"


def test_refusals_from_one_address_wait_longer_each_time_until_one_succeeds():
    throttle = Throttle(base=0.5, cap=8.0)
    assert [throttle.failed("10.0.0.1") for _ in range(7)] == [0.5, 1, 2, 4, 8, 8, 8]
    assert throttle.failed("10.0.0.2") == 0.5
    throttle.succeeded("10.0.0.1")
    assert throttle.failed("10.0.0.1") == 0.5
    assert Throttle(base=0).failed("x") == 0


def test_the_gate_lets_in_only_what_each_profile_asks_for(tmp_path):
    registry = ChargePointRegistry.load(registry_file(tmp_path, f"""
[charge_points.OPEN]
security_profile = 0
[charge_points.BASIC]
security_profile = 1
authorization_key = "{KEY}"
[charge_points.CERT]
security_profile = 3
"""))
    gate = Gate(registry, lambda *refusal: None)

    def check(charge_point_id, authorization=None, certificate=None):
        headers = Headers({"Authorization": authorization} if authorization else {})
        refusal = gate.check(charge_point_id, headers, certificate)
        return refusal and (refusal[0], refusal[1])

    basic = build_authorization_basic
    assert check("NOBODY")[0] == http.HTTPStatus.NOT_FOUND
    assert check("OPEN") is None
    assert check("BASIC", basic("BASIC", KEY)) is None
    assert check("BASIC") == (http.HTTPStatus.UNAUTHORIZED, "no credentials")
    assert check("BASIC", basic("BASIC", OTHER_KEY))[1] == "wrong authorization key"
    assert check("BASIC", basic("OPEN", KEY))[1] == "username is not the charge point id"
    assert check("BASIC", "Bearer abc")[1] == "credentials that are not HTTP Basic"
    assert check("CERT", basic("CERT", KEY))[1] == "no client certificate (profile 3)"
    assert check("CERT", certificate="OTHER")[1] == "client certificate is for 'OTHER'"
    assert check("CERT", certificate="CERT") is None
    assert charge_point_id_of("/ocpp/CP%2F1/?x=1") == "CP/1"


# -- csms.py on TLS, against clients of the test ----------------------------------------------

class SecureSite:
    """csms.py with a registry of CP_3 and CP_4 (profile 3) and CP_2 (profile 2), on wss://."""

    def __init__(self, tmp_path, db_path) -> None:
        self.dir = tmp_path / "pki"
        secure_site.make(self.dir, 3, ["CP_3", "CP_4"])
        ca_key = pki.load_key(self.dir / "ca.key")
        ca = pki.load_certificate(self.dir / "ca.pem")
        key_hash = hash_key(KEY, iterations=1000)
        registry = self.dir / "charge_points.toml"
        registry.write_text(registry.read_text() + f'[charge_points.CP_2]\nsecurity_profile = 2\n'
                                                   f'authorization_key_hash = "{key_hash}"\n')
        self.ca_key, self.ca = ca_key, ca
        self.db_path = db_path
        self.port = free_port()
        self.proc = start(script("csms.py", "--port", str(self.port), "--scenario", "none",
                                 "--db", str(db_path), "--charge-points", str(registry),
                                 "--tls-cert", str(self.dir / "csms.pem"),
                                 "--tls-key", str(self.dir / "csms.key"),
                                 "--tls-client-ca", str(self.dir / "ca.pem"),
                                 "--refusal-delay", "0.01"))
        wait_for(lambda: port_open(self.port) or self.proc.poll() is not None, timeout=30,
                 message="csms.py on wss")
        assert self.proc.poll() is None, self.proc.communicate()[0]

    def url(self, charge_point_id: str, scheme: str = "wss") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{charge_point_id}"

    def context(self, cert: str | None = None, key: str | None = None,
                max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.dir / "ca.pem"))
        if cert:
            context.load_cert_chain(cert, key)
        if max_version:
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = max_version
        return context

    def close(self) -> str:
        code, out = stop(self.proc)
        assert code == 0, out
        return out


@pytest.fixture
def site(tmp_path, db_path):
    running = SecureSite(tmp_path, db_path)
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            stop(running.proc)


async def boot(url: str, charge_point_id: str, **options) -> str:
    """Connect, send a BootNotification, return its status."""
    async with connect(url, subprotocols=["ocpp1.6"], open_timeout=10, **options) as ws:
        client = ChargePoint(charge_point_id, ws, response_timeout=30)
        reader = __import__("asyncio").create_task(client.start())
        try:
            result = await client.call(call.BootNotification(charge_point_model="T",
                                                             charge_point_vendor="T"))
            return result.status
        finally:
            reader.cancel()


async def refused_with(url: str, **options) -> int:
    with pytest.raises(websockets.InvalidStatus) as refusal:
        async with connect(url, subprotocols=["ocpp1.6"], open_timeout=10, **options):
            pass
    return refusal.value.response.status_code


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_each_profile_is_accepted_with_its_credentials_and_refused_without(site,
                                                                                  tmp_path):
    cert, key = str(site.dir / "CP_3.pem"), str(site.dir / "CP_3.key")
    basic = {"Authorization": build_authorization_basic("CP_2", KEY)}
    assert await boot(site.url("CP_3"), "CP_3", ssl=site.context(cert, key)) == "Accepted"
    assert await boot(site.url("CP_2"), "CP_2", ssl=site.context(),
                      additional_headers=basic) == "Accepted"

    assert await refused_with(site.url("CP_3"), ssl=site.context()) == 401  # no certificate
    assert await refused_with(site.url("CP_2"), ssl=site.context()) == 401  # no key
    wrong = {"Authorization": build_authorization_basic("CP_2", OTHER_KEY)}
    assert await refused_with(site.url("CP_2"), ssl=site.context(),
                              additional_headers=wrong) == 401
    stolen = {"Authorization": build_authorization_basic("CP_3", KEY)}
    assert await refused_with(site.url("CP_2"), ssl=site.context(),
                              additional_headers=stolen) == 401
    assert await refused_with(site.url("CP_9"), ssl=site.context(cert, key)) == 404
    # CP_3's certificate makes it neither CP_2 (profile 2: the key counts) nor CP_4
    assert await refused_with(site.url("CP_2"), ssl=site.context(cert, key)) == 401
    assert await refused_with(site.url("CP_4"), ssl=site.context(cert, key)) == 401

    other_ca_key, other_ca = pki.make_ca("another CA")
    impostor_key, impostor = pki.issue(other_ca_key, other_ca, "CP_3", client=True)
    pki.write(tmp_path / "impostor.key", impostor_key)
    pki.write(tmp_path / "impostor.pem", impostor)
    for options in ({"ssl": site.context(str(tmp_path / "impostor.pem"),
                                         str(tmp_path / "impostor.key"))},
                    {"ssl": site.context(max_version=ssl.TLSVersion.TLSv1_1)}):
        with pytest.raises((ssl.SSLError, ConnectionError, websockets.InvalidMessage)):
            await boot(site.url("CP_3"), "CP_3", **options)
    with pytest.raises((websockets.InvalidMessage, ConnectionError, websockets.InvalidHandshake)):
        await boot(site.url("CP_3", scheme="ws"), "CP_3")

    out = site.close()
    with MemoryBank(site.db_path, readonly=True) as bank:
        refusals = bank.get_recent_events(None, {"event_type": "SECURITY"})
    reasons = {event["data"]["reason"] for event in refusals}
    assert {"no client certificate (profile 3)", "no credentials", "wrong authorization key",
            "username is not the charge point id", "unknown charge point",
            "client certificate is for 'CP_3'"} <= reasons
    assert all(event["data"]["peer"].startswith("127.0.0.1:") for event in refusals)
    assert_no_secret(site.db_path, out, KEY, OTHER_KEY)
    shown = subprocess.run(script("memory_viewer.py", "--db", str(site.db_path), "--security",
                                  "100", "--json"), capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert len(json.loads(shown.stdout)["security"]) == len(refusals)


def assert_no_secret(db_path, output: str, *secrets_: str) -> None:
    """Neither the log nor any file of the MemoryBank holds a key."""
    files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
    for secret in secrets_:
        assert secret not in output
        for path in files:
            assert secret.encode() not in path.read_bytes(), path


def test_csms_refuses_to_start_with_a_registry_it_cannot_serve(tmp_path, db_path):
    registry = registry_file(tmp_path, "[charge_points.CP_3]\nsecurity_profile = 3\n")
    result = subprocess.run(script("csms.py", "--port", "0", "--db", str(db_path),
                                   "--charge-points", str(registry)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "need --tls-cert and --tls-key" in result.stderr
    assert not db_path.exists()


def test_hash_key_reads_the_key_from_standard_input_only():
    result = subprocess.run([*script("csms.py", "--hash-key")], input=KEY + "\n",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and verify_key(KEY, result.stdout.strip())
    short = subprocess.run([*script("csms.py", "--hash-key")], input="short\n",
                           capture_output=True, text=True, timeout=60)
    assert short.returncode == 2 and "16 to 20 characters" in short.stderr
    assert sys.executable  # the scripts run with the test's interpreter


def test_cp_py_boots_on_profiles_2_and_3_against_csms_py(site, tmp_path):
    """Both sides of ours, as run_all.sh --secure runs them."""
    key_file = tmp_path / "CP_2.authkey"
    key_file.write_text(KEY + "\n")
    common = ("--url", f"wss://127.0.0.1:{site.port}", "--db", str(site.db_path),
              "--ca-cert", str(site.dir / "ca.pem"), "--can-interface", "remote",
              "--can-channel", "ws://127.0.0.1:1/", "--state", str(tmp_path / "state.db"))
    procs = [start(script("cp.py", *common, "--id", "CP_2", "--security-profile", "2",
                          "--auth-key-file", str(key_file))),
             start(script("cp.py", *common, "--id", "CP_3", "--security-profile", "3",
                          "--client-cert", str(site.dir / "CP_3.pem"),
                          "--client-key", str(site.dir / "CP_3.key")))]
    try:
        def booted() -> set:
            with MemoryBank(site.db_path, readonly=True) as bank:
                return {e["charge_point_id"] for e in bank.get_recent_events(None, {
                    "event_type": "OCPP_MESSAGE", "source": "csms", "search": "BootNotification"})}
        wait_for(lambda: {"CP_2", "CP_3"} <= booted(), timeout=60, message="both boots")
    finally:
        results = [stop(proc) for proc in procs]
    assert all(code == 0 for code, _ in results), results
    assert_no_secret(site.db_path, "".join(out for _, out in results) + site.close(), KEY)

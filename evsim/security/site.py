"""The throwaway security setup of ``run_all.sh --secure``: a CA, a certificate for the central
system on 127.0.0.1/localhost, and per charge point a client certificate (profile 3) or a random
AuthorizationKey (profile 2), with a registry that names them.

    python -m evsim.security.site --out DIR --profile 3 --charge-point CP_1

Writes ``ca.pem``/``ca.key`` (the central system signs charge points' CSRs with them),
``csms.pem``/``csms.key``, ``<id>.pem``/``<id>.key`` or ``<id>.authkey``, and
``charge_points.toml``, which keeps only a hash of each key. Private keys and key files are
mode 0600; nothing secret is printed.
"""
from __future__ import annotations

import argparse
import secrets
import string
import sys
from collections.abc import Sequence
from pathlib import Path

from evsim.csms.security import hash_key
from evsim.security import pki

KEY_ALPHABET = string.ascii_letters + string.digits


def make(out: Path, profile: int, charge_points: Sequence[str],
         hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> Path:
    """Write the files; returns the registry's path."""
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca = pki.make_ca()
    pki.write(out / "ca.key", ca_key)
    pki.write(out / "ca.pem", ca)
    server_key, server = pki.issue(ca_key, ca, hosts[0], hosts=hosts)
    pki.write(out / "csms.key", server_key)
    pki.write(out / "csms.pem", server)
    lines = ["# Made by evsim.security.site: the charge points run_all.sh --secure lets in.", ""]
    for charge_point_id in charge_points:
        lines.append(f'[charge_points."{charge_point_id}"]')
        lines.append(f"security_profile = {profile}")
        if profile == 3:
            key, cert = pki.issue(ca_key, ca, charge_point_id, client=True)
            pki.write(out / f"{charge_point_id}.key", key)
            pki.write(out / f"{charge_point_id}.pem", cert)
        else:
            auth_key = "".join(secrets.choice(KEY_ALPHABET) for _ in range(20))
            path = out / f"{charge_point_id}.authkey"
            path.touch(mode=0o600)
            path.write_text(auth_key + "\n", encoding="utf-8")
            lines.append(f'authorization_key_hash = "{hash_key(auth_key)}"')
        lines.append("")
    registry = out / "charge_points.toml"
    registry.write_text("\n".join(lines), encoding="utf-8")
    return registry


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evsim.security.site",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("--profile", type=int, choices=(2, 3), default=3,
                        help="security profile of the charge points (default: 3)")
    parser.add_argument("--charge-point", action="append", default=[], metavar="ID",
                        help="a charge point id (repeatable; default: CP_1)")
    args = parser.parse_args(argv)
    try:
        registry = make(args.out, args.profile, args.charge_point or ["CP_1"])
    except OSError as exc:
        print(f"{parser.prog}: error: cannot write to {args.out}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    print(f"wrote a CA, certificates and {registry} for security profile {args.profile}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

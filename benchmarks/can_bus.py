#!/usr/bin/env python3
"""Frames per second carried between two processes over the default bus (python-can-remote).

Starts its own bus server on a free loopback port, a sender process, and receives in this one;
prints throughput, loss and reordering for a burst and for paced streams, beside the ceiling of
a classic CAN bus at 1 Mbit/s.
"""
from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import time

import can
from measure import free_port, wait_listening

from evsim.canbus import bus as canbus

# An 8-byte standard frame is 111 bits before bit stuffing, up to ~135 with it: at 1 Mbit/s
# that is 7,400 to 9,000 frames/s, "about 8,000".
CLASSIC_CAN_CEILING = 1_000_000 / 125






def send(url: str, count: int, rate: float, connected, go) -> None:
    bus = can.Bus(interface="remote", channel=url)
    connected.set()
    go.wait()
    start = time.perf_counter()
    for seq in range(count):
        if rate:
            delay = start + seq / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        bus.send(can.Message(arbitration_id=0x300, data=seq.to_bytes(8, "little"),
                             is_extended_id=False))
    bus.shutdown()


def measure(url: str, count: int, rate: float, quiet_after: float = 2.0) -> dict:
    receiver = can.Bus(interface="remote", channel=url)
    connected, go = multiprocessing.Event(), multiprocessing.Event()
    sender = multiprocessing.Process(target=send, args=(url, count, rate, connected, go))
    sender.start()
    connected.wait()
    received, out_of_order, last = 0, 0, -1
    go.set()
    first = end = None
    while received < count:
        msg = receiver.recv(quiet_after)
        if msg is None:
            break
        end = time.perf_counter()
        first = first or end
        seq = int.from_bytes(msg.data, "little")
        out_of_order += seq < last
        last = max(last, seq)
        received += 1
    sender.join()
    receiver.shutdown()
    elapsed = (end - first) if first and end and end > first else float("nan")
    return {"sent": count, "received": received, "lost": count - received,
            "out_of_order": out_of_order, "seconds": elapsed, "fps": received / elapsed}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=20_000, help="frames sent back to back")
    parser.add_argument("--paced", type=int, default=8_000, help="frames per paced stream")
    parser.add_argument("--rates", type=float, nargs="*", default=[1_000, 4_000, 8_000],
                        help="paced rates in frames/s")
    args = parser.parse_args(argv)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "can_remote", "--interface", "virtual",
                               "--channel", "0", "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"ws://127.0.0.1:{port}/"
    try:
        wait_listening(port, server, "the bus server")
        canbus.open_bus(canbus.bus_config(channel=url), retry_interval=0.1).shutdown()
        print(f"python-can-remote bus at {url}; classic CAN ceiling at 1 Mbit/s: "
              f"~{CLASSIC_CAN_CEILING:,.0f} eight-byte frames/s")
        print(f"{'test':<18}{'sent':>8}{'received':>10}{'lost':>6}{'reordered':>11}"
              f"{'frames/s':>11}{'x CAN':>7}")
        runs = [("burst", args.burst, 0.0)] + [(f"paced {r:,.0f}/s", args.paced, r)
                                               for r in args.rates]
        for name, count, rate in runs:
            r = measure(url, count, rate)
            print(f"{name:<18}{r['sent']:>8}{r['received']:>10}{r['lost']:>6}"
                  f"{r['out_of_order']:>11}{r['fps']:>11,.0f}{r['fps'] / CLASSIC_CAN_CEILING:>7.2f}")
    finally:
        server.terminate()
        server.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Memory per idle logged-in WebSocket session of a running chatd.

First registers N users (short connections, then closed) and lets the server settle, so
that what the store and the allocator grow by for new users is not counted. Then logs
the N users in over ws://ADDR/ws, one connection each, kept open and idle, and reads the
server's VmRSS from /proc before and after: the difference over N is what one idle
logged-in WebSocket session costs. Loopback only; ends by itself.

    pip install websockets
    python3 crates/bench/scripts/ws_idle_memory.py --addr 127.0.0.1:8080 --pid PID -n 4000
"""
import argparse
import asyncio
import json
import time

import websockets


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def register(url, name):
    async with websockets.connect(url, compression=None, ping_interval=None) as ws:
        await ws.send(json.dumps({"op": "register", "rid": 1, "name": name, "password": "pw"}))
        frame = json.loads(await ws.recv())
        if frame.get("ok") is not True:
            raise RuntimeError(f"register failed: {frame}")


async def session(url, name, ready):
    ws = await websockets.connect(url, max_size=2**20, compression=None, ping_interval=None)
    await ws.send(json.dumps({"op": "login", "rid": 2, "name": name, "password": "pw"}))
    while True:
        frame = json.loads(await ws.recv())
        if frame.get("event") == "synced":
            break
        if frame.get("ok") is False and frame.get("rid") == 2:
            raise RuntimeError(f"login failed: {frame}")
    ready.append(ws)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("-n", type=int, default=4000)
    p.add_argument("--batch", type=int, default=200)
    a = p.parse_args()
    url = f"ws://{a.addr}/ws"
    stamp = int(time.time())
    names = [f"u{stamp}_{i}" for i in range(a.n)]
    for start in range(0, a.n, a.batch):
        await asyncio.gather(*(register(url, n) for n in names[start : start + a.batch]))
    # A first batch of sessions warms the server up (its pools, the store's caches).
    warm = []
    await asyncio.gather(*(session(url, n, warm) for n in names[: a.batch]))
    await asyncio.sleep(12)  # jemalloc returns freed pages after about 10 s
    before = rss_kib(a.pid)
    ready = []
    for start in range(0, a.n, a.batch):
        await asyncio.gather(
            *(session(url, n, ready) for n in names[max(start, a.batch) : start + a.batch])
        )
    await asyncio.sleep(2)  # let the server settle before reading its memory
    after = rss_kib(a.pid)
    per = (after - before) * 1024 / max(1, len(ready))
    print(f"sessions={len(ready)} rss_before={before}KiB rss_after={after}KiB per_session={per:.0f}B")
    for ws in ready + warm:
        await ws.close()


asyncio.run(main())

"""A client that is not ours: Python's `websockets` speaking the harness protocol.

Usage: ws_client.py PORT. The server has a service `db`; the test changes its state once this
script prints `subscribed`. Exits non-zero on any mismatch.
"""

import asyncio
import json
import sys

import websockets


async def main(port: int) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1") as ws:
        await ws.send(json.dumps(
            {"id": "123", "type": "request", "action": "list_services", "params": {}}))
        answer = json.loads(await ws.recv())
        assert answer["id"] == "123", answer
        assert answer["type"] == "response", answer
        assert [s["name"] for s in answer["params"]["services"]] == ["db"], answer

        await ws.send(json.dumps({"id": 2, "type": "request", "action": "nonsense"}))
        error = json.loads(await ws.recv())
        assert error["id"] == 2 and error["type"] == "error", error
        assert error["params"]["code"] == "unknown_action", error

        await ws.send(json.dumps({"id": "s", "type": "request", "action": "subscribe",
                                  "params": {"services": ["db"]}}))
        assert json.loads(await ws.recv())["id"] == "s"
        print("subscribed", flush=True)
        event = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert event["type"] == "event", event
        assert event["action"] == "service_state_changed", event
        assert event["params"]["to"] == {"status": "starting"}, event
        # websockets answers the server's pings and closes in order on leaving the block.
        print("ok", flush=True)


asyncio.run(main(int(sys.argv[1])))

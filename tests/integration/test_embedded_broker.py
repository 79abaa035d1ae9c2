"""The demo's fallback broker (EmbeddedBroker, amqtt in-process) carries what the agents
rely on (docs/demo.md): QoS 1, retained messages and a retained Last Will published
when a client dies. The whole demo runs on it under `make test-faults`
(tests/e2e/test_demo.py); `make test` runs the demo on mosquitto."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import aiomqtt

from muto.sim.services import EmbeddedBroker

# A client that connects with a retained Last Will, says so, then waits to be killed.
DIES = """
import asyncio, sys
import aiomqtt

async def main():
    will = aiomqtt.Will("fleet/v1/presence", b"offline", qos=1, retain=True)
    async with aiomqtt.Client("127.0.0.1", int(sys.argv[1]), identifier="v1", will=will) as c:
        await c.publish("fleet/v1/presence", b"online", qos=1, retain=True)
        print("connected", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def first(client: aiomqtt.Client, topic: str) -> bytes:
    async with asyncio.timeout(10):
        async for message in client.messages:
            if message.topic.matches(topic):
                assert isinstance(message.payload, bytes)
                return message.payload
    raise AssertionError(f"nothing on {topic}")


def test_qos1_retained_and_the_last_will_of_a_killed_client() -> None:
    async def scenario() -> None:
        broker = EmbeddedBroker()
        await broker.start()
        try:
            port = broker.port
            async with aiomqtt.Client("127.0.0.1", port, identifier="cloud") as cloud:
                await cloud.subscribe("fleet/+/notify", qos=1)
                async with aiomqtt.Client("127.0.0.1", port, identifier="agent") as agent:
                    await agent.publish("fleet/v1/notify", b"hint", qos=1)
                assert await first(cloud, "fleet/v1/notify") == b"hint"

            dying = await asyncio.create_subprocess_exec(
                sys.executable, "-c", DIES, str(port), stdout=subprocess.PIPE
            )
            assert dying.stdout is not None
            async with asyncio.timeout(30):
                assert await dying.stdout.readline() == b"connected\n"
            # A late subscriber is given the retained presence at once...
            async with aiomqtt.Client("127.0.0.1", port, identifier="late") as late:
                await late.subscribe("fleet/+/presence", qos=1)
                assert await first(late, "fleet/v1/presence") == b"online"
                dying.send_signal(signal.SIGKILL)
                await dying.wait()
                # ...and the Last Will when the client dies without a goodbye.
                assert await first(late, "fleet/v1/presence") == b"offline"
            async with aiomqtt.Client("127.0.0.1", port, identifier="later") as later:
                await later.subscribe("fleet/+/presence", qos=1)
                assert await first(later, "fleet/v1/presence") == b"offline"  # retained
        finally:
            await broker.stop()

    asyncio.run(scenario())

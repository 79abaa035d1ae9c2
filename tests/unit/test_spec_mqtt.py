"""spec/mqtt-topics.md and muto.domain.messages.TOPICS must say the same thing.

Regenerate the schema sections of the spec after changing a payload:
    .venv/bin/python -m tests.unit.test_spec_mqtt
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from muto.domain.messages import TOPICS, Direction, Leaf
from muto.domain.wire import WireError, decode, published
from tests.support.specs import minimal

SPEC = Path(__file__).resolve().parents[2] / "spec" / "mqtt-topics.md"
PAYLOADS = {spec.payload.__name__: spec.payload for spec in TOPICS.values()}

Row = tuple[Direction, int, bool, str, str]  # direction, QoS, retained, payload, schema


def spec_text() -> str:
    return SPEC.read_text(encoding="utf-8")


def topic_rows(text: str) -> dict[str, Row]:
    """The rows of the table under `## Topics`, keyed by leaf."""
    section = text.split("\n## Topics\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    rows: dict[str, Row] = {}
    for line in lines[2:]:  # skip the header and the |---| line
        leaf, direction, qos, retained, payload, schema = (
            cell.strip().strip("`") for cell in line.strip("|").split("|")
        )
        assert leaf not in rows, f"leaf {leaf!r} appears twice in the topic table"
        assert retained in {"yes", "no"}, f"retained must be yes or no, got {retained!r}"
        rows[leaf] = (
            Direction(direction.replace("→", "->").replace(" ", "")),
            int(qos),
            retained == "yes",
            payload,
            schema,
        )
    return rows


SCHEMA_BLOCK = re.compile(
    r"^### `(?P<name>\w+)` — `(?P<schema>[\w.-]+)`\n.*?^```json\n(?P<body>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)


def schema_blocks(text: str) -> dict[str, tuple[str, Any]]:
    """Payload name -> (schema literal in the heading, the JSON Schema in the block)."""
    blocks: dict[str, tuple[str, Any]] = {}
    for match in SCHEMA_BLOCK.finditer(text):
        assert match["name"] not in blocks, f"{match['name']} has two schema sections"
        blocks[match["name"]] = (match["schema"], json.loads(match["body"]))
    return blocks


def expected_rows() -> dict[str, Row]:
    return {
        str(leaf): (spec.direction, spec.qos, spec.retained, spec.payload.__name__, spec.schema)
        for leaf, spec in TOPICS.items()
    }


def test_every_leaf_has_a_topic_spec() -> None:
    assert set(TOPICS) == set(Leaf)


def test_every_topic_in_the_code_is_in_the_spec() -> None:
    documented = topic_rows(spec_text())
    for leaf, row in expected_rows().items():
        assert documented.get(leaf) == row, f"spec row for {leaf!r} differs from TOPICS"


def test_every_topic_in_the_spec_is_in_the_code() -> None:
    assert set(topic_rows(spec_text())) <= set(expected_rows())


def test_the_only_cloud_to_vehicle_topics_are_notify_and_the_read_only_refresh() -> None:
    downstream = {
        leaf for leaf, spec in TOPICS.items() if spec.direction is Direction.CLOUD_TO_VEHICLE
    }
    assert downstream == {Leaf.DESIRED_NOTIFY, Leaf.CMD_REFRESH}


def test_every_payload_carries_its_schema_literal() -> None:
    for spec in TOPICS.values():
        assert re.fullmatch(r"muto\.[a-z-]+\.v[1-9][0-9]*", spec.schema), spec.schema
        encoded = msgspec.json.decode(msgspec.json.encode(minimal(spec.payload)))
        assert encoded["schema"] == spec.schema


@pytest.mark.parametrize("leaf", sorted(TOPICS))
def test_a_payload_without_its_schema_is_refused(leaf: Leaf) -> None:
    """Rule 5: `schema` is required on every payload, snapshots included (they once took
    it as a default, so a schemaless `agent/metadata` was stored), and the published
    schema says so."""
    payload = TOPICS[leaf].payload
    body = msgspec.json.decode(msgspec.json.encode(minimal(payload)))
    del body["schema"]
    with pytest.raises(WireError, match="missing required field `schema`"):
        decode(msgspec.json.encode(body), payload)
    schema = published(msgspec.json.schema(payload))["$defs"][payload.__name__]
    assert "schema" in schema["required"] and "default" not in schema["properties"]["schema"]


def test_schema_sections_cover_exactly_the_payloads() -> None:
    assert set(schema_blocks(spec_text())) == set(PAYLOADS)


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_documented_json_schema_equals_the_generated_one(name: str) -> None:
    literal, documented = schema_blocks(spec_text())[name]
    payload = PAYLOADS[name]
    assert literal == next(s.schema for s in TOPICS.values() if s.payload is payload)
    assert documented == published(msgspec.json.schema(payload)), (
        f"the schema of {name} in {SPEC.name} is stale; regenerate with "
        "`.venv/bin/python -m tests.unit.test_spec_mqtt`"
    )


SCALAR = r'(?:"[^"]*"|-?\d+(?:\.\d+)?|true|false|null)'


def _compact(schema: Any) -> str:
    """Pretty JSON, with arrays of scalars and one-key objects kept on one line."""
    text = json.dumps(schema, indent=2, ensure_ascii=False)
    text = re.sub(
        rf"\[\s*({SCALAR}(?:,\s*{SCALAR})*)\s*\]",
        lambda m: "[" + re.sub(r",\s*", ", ", m.group(1)) + "]",
        text,
    )
    return re.sub(rf'\{{\s*("[^"]*": (?:{SCALAR}|\[[^\[\]{{}}]*\]))\s*\}}', r"{\1}", text)


def render_schema_sections() -> str:
    sections = []
    for spec in TOPICS.values():
        name = spec.payload.__name__
        body = _compact(published(msgspec.json.schema(spec.payload)))
        sections.append(f"### `{name}` — `{spec.schema}`\n\n```json\n{body}\n```\n")
    return "\n".join(sections)


if __name__ == "__main__":
    print(render_schema_sections())

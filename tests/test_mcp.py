"""`genloom mcp` and /mcp, driven by the official SDK's own client: tools listed with JSON schemas,
each called; a reader cannot call a writer's tool; results equal the HTTP API's; asks are logged."""

from __future__ import annotations

import json
import os
import sys

import anyio
import httpx
import sqlalchemy as sa
import ui_support
from conftest import REPO_ROOT

served = ui_support.served  # the module's server: a fixture shared by the UI and MCP tests

TOOLS = {"search", "ask", "list_collections", "get_generation", "feedback", "sql"}


def _http(served, key: str):
    import httpx2
    from mcp.client import Client
    from mcp.client.streamable_http import streamable_http_client

    client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120)
    return Client(streamable_http_client(f"{served.url}/mcp", http_client=client))


async def _calls(served, key: str, calls: list[tuple[str, dict]]):
    async with _http(served, key) as client:
        tools = await client.list_tools()
        results = [await client.call_tool(name, args) for name, args in calls]
    return tools, results


def test_tools_have_schemas_and_answer_like_the_http_api(served):
    writer = served.keys["writer"]
    tools, (collections, found, asked) = anyio.run(
        _calls,
        served,
        writer,
        [
            ("list_collections", {}),
            ("search", {"query": "reciprocal rank fusion", "collection": "kb", "k": 3}),
            ("ask", {"question": "How does hybrid search work?", "collection": "kb"}),
        ],
    )
    listed = {t.name: t for t in tools.tools}
    assert set(listed) == TOOLS
    assert listed["search"].input_schema["required"] == ["query", "collection"]
    assert listed["search"].input_schema["properties"]["k"]["maximum"] == 100
    assert [c["name"] for c in collections.structured_content["collections"]] == ["kb"]  # tenant default only
    api = httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {writer}"}, timeout=120)
    over_http = api.get("/v1/search", params={"q": "reciprocal rank fusion", "collection": "kb", "k": 3}).json()
    assert found.structured_content == json.loads(json.dumps(over_http))
    gid = asked.structured_content["generation_id"]
    _, (detail, rated, rows) = anyio.run(
        _calls,
        served,
        writer,
        [
            ("get_generation", {"generation_id": gid}),
            ("feedback", {"generation_id": gid, "score": 4, "comment": "via MCP"}),
            ("sql", {"query": "SELECT count(*) AS n FROM generations"}),
        ],
    )
    assert detail.structured_content == api.get(f"/v1/generations/{gid}").json() | {
        "feedback": detail.structured_content["feedback"]
    }
    assert rated.structured_content["score"] == 4 and not rated.is_error
    assert rows.structured_content["rows"] == [{"n": 1}]  # the ask was logged like any other generation
    engine = sa.create_engine(served.db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT comment FROM feedback WHERE generation_id = :g"), {"g": gid}).scalar() == (
            "via MCP"
        )
    engine.dispose()


def test_a_reader_cannot_call_a_writers_tool_and_a_bad_key_gets_401(served):
    _, (asked, rated, found) = anyio.run(
        _calls,
        served,
        served.keys["reader"],
        [
            ("ask", {"question": "anything?", "collection": "kb"}),
            ("feedback", {"generation_id": 1, "score": 1}),
            ("search", {"query": "install", "collection": "kb"}),
        ],
    )
    assert asked.is_error and "needs writer" in asked.content[0].text
    assert rated.is_error and "needs writer" in rated.content[0].text
    assert not found.is_error and found.structured_content["hits"]
    r = httpx.post(f"{served.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert r.status_code == 401


def test_tenant_b_sees_only_its_rows_over_mcp(served):
    _, (collections, found) = anyio.run(
        _calls,
        served,
        served.keys["other"],
        [("list_collections", {}), ("search", {"query": "zebras plan", "collection": "kb"})],
    )
    assert [h["doc_id"] for h in found.structured_content["hits"]] == ["secret"]
    assert collections.structured_content["collections"][0]["documents"] == 1


def test_genloom_mcp_over_stdio_acts_with_its_key(served):
    from mcp.client import Client
    from mcp.client.stdio import StdioServerParameters

    env = {**os.environ, "DATABASE_URL": served.db_url, "GENLOOM_API_KEY": served.keys["reader"]}
    params = StdioServerParameters(command=sys.executable, args=[str(REPO_ROOT / "cli.py"), "mcp"], env=env)

    async def run():
        async with Client(params) as client:
            tools = await client.list_tools()
            listed = await client.call_tool("list_collections", {})
            refused = await client.call_tool("ask", {"question": "x?", "collection": "kb"})
        return tools, listed, refused

    tools, listed, refused = anyio.run(run)
    assert {t.name for t in tools.tools} == TOOLS
    assert [c["name"] for c in listed.structured_content["collections"]] == ["kb"]
    assert refused.is_error and "needs writer" in refused.content[0].text

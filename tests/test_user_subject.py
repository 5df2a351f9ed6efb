"""Searching by the user's own name: the query is read as the user's memories word it ("User ...")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from harmonia_mcp import search
from harmonia_mcp.config import Settings
from harmonia_mcp.embed import OnnxEmbedder
from harmonia_mcp.server import create_server

pytestmark = pytest.mark.anyio

NAMES = ["Joaquin", "Araya", "Jo"]


@pytest.fixture(scope="module")
def minilm() -> OnnxEmbedder:
    """The real model, loaded once (the server's OnnxEmbedder reuses the loaded session)."""
    model = OnnxEmbedder()
    model.load()
    return model


# --- the rewrite ---


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Where does Joaquin work now?", "Where does User work now?"),
        ("What is Joaquin Araya's job?", "What is User's job?"),  # a full name is one subject
        ("Is Jo engaged?", "Is User engaged?"),
        ("where do I live?", "where do I live?"),  # first-person words are left alone (docs/search.md)
        ("Jonathan met Jo-Jo and Joaquina", "Jonathan met Jo-Jo and Joaquina"),  # whole words only
        ("where does joaquin live", "where does joaquin live"),  # a name is matched as the memories write it
        ("Joaquin", "Joaquin"),  # asks for the name itself: nothing but the subject would be left
        ("Joaquin Araya?", "Joaquin Araya?"),
    ],
)
def test_the_users_names_become_the_subject_user(query: str, expected: str) -> None:
    assert search.as_user_subject(query, NAMES) == expected


def test_name_words_come_from_the_name_memories_without_the_subject_or_lower_case_words() -> None:
    contents = [
        "User's name is Tomasz Wójcik, but everyone calls User Tom",
        "User goes by Jo",
        "User's name is O'Neill",
        "User's name is élan",  # not capitalised: not read as a name
    ]
    assert search.own_name_words(contents) == ["Tomasz", "Wójcik", "Tom", "Jo", "O'Neill"]


def test_the_keyword_side_drops_the_subject_it_was_given() -> None:
    rewritten = search.as_user_subject("What is Joaquin's job?", NAMES)
    assert search.build_match_expression(search.without_user_subject(rewritten)) == '"job"'


# --- through the MCP client ---


async def _search(client: Client, query: str, user: str, mode: str | None = None) -> dict[str, Any]:
    arguments: dict[str, Any] = {"query": query, "user_id": user}
    if mode is not None:
        arguments["mode"] = mode
    result = (await client.call_tool("search_memories", arguments)).structured_content
    assert result is not None
    return result


async def _store(client: Client, user: str, *messages: str) -> None:
    for message in messages:
        await client.call_tool("store_memory", {"message": message, "user_id": user})


async def test_keyword_search_by_the_users_name_finds_the_fact_not_the_name(client: Client) -> None:
    await _store(
        client,
        "joaquin",
        "Hi, I'm Joaquin Araya.",
        "I work as a seismologist at the National Seismological Center.",
        "I live in La Serena.",
    )
    found = [hit["content"] for hit in (await _search(client, "Where does Joaquin work?", "joaquin"))["results"]]
    assert found and "seismologist" in found[0], found
    assert not any("name is" in content for content in found), found  # "Joaquin" matched only the name before
    by_name = [hit["content"] for hit in (await _search(client, "Joaquin", "joaquin"))["results"]]
    assert by_name[0] == "User's name is Joaquin Araya", by_name


async def test_another_users_friend_of_the_same_name_is_still_found_by_that_name(client: Client) -> None:
    await _store(client, "joaquin", "Hi, I'm Joaquin Araya.", "I work as a seismologist.")
    await _store(client, "bob", "My neighbour Joaquin works at a bakery.", "I work at the harbour.")
    found = [hit["content"] for hit in (await _search(client, "Where does Joaquin work?", "bob"))["results"]]
    assert found and "bakery" in found[0], found  # bob's name is not Joaquin: his query is not rewritten


async def test_hybrid_search_by_the_users_name_ranks_their_job_above_a_friends(
    db_path: Path, minilm: OnnxEmbedder
) -> None:
    settings = Settings(db_path=str(db_path), extractor="rules", embedder="embedded")
    async with Client(create_server(settings), raise_exceptions=True) as client:
        await _store(
            client,
            "joaquin",
            "Hi! I'm Joaquin Araya.",
            "My husband Felipe found a job at the conservatory.",
            "I accepted a job at the National Seismological Center.",
            "Our dogs Lola and Tito love the beach.",
        )
        result: dict[str, Any] = {}
        with anyio.fail_after(30):
            while result.get("mode") != "hybrid":  # the model loads after start-up
                result = await _search(client, "Where does Joaquin work now?", "joaquin")
                await anyio.sleep(0.05)
        found = [hit["content"] for hit in result["results"]]
        assert "Seismological" in found[0], found

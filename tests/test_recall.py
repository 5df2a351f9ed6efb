"""Context for the next prompt through the MCP client: `recall`, `upcoming_events`, the profile resource,
the `recall` and `remember` prompts and `user_id` completion."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import PromptReference, ResourceTemplateReference, TextContent, TextResourceContents

from harmonia_mcp.config import Settings
from harmonia_mcp.context import estimate_tokens

pytestmark = pytest.mark.anyio

LIFE = [
    "My name is Jason Thompson.",
    "I live in Lisbon.",
    "I work as a software engineer at AWS.",
    "I have a dog called Biggie.",
    "My wife Anna loves hiking.",
    "I speak Portuguese and English.",
    "I'm allergic to peanuts.",
    "I prefer tea over coffee.",
    "I play chess with my neighbour on the balcony.",
    "I went to a jazz concert in Porto last summer.",
]


@pytest.fixture
def settings(db_path: Path) -> Settings:
    """As conftest's, in UTC: the tests compute "today" and "tomorrow" in UTC, as the server then does."""
    return Settings(
        db_path=str(db_path), extractor="rules", default_user="default", max_message_bytes=32 * 1024, timezone="UTC"
    )


LINE = re.compile(r"^- (?:(?P<when>[^:]+(?::\d\d)?(?: \(\w+\))?): )?(?P<content>.+) \((?P<id>#[1-9][0-9]*)\)$")


async def _call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def _store(client: Client, messages: list[str], **arguments: Any) -> list[dict[str, Any]]:
    stored: list[dict[str, Any]] = []
    for message in messages:
        stored += (await _call(client, "store_memory", {"message": message, **arguments}))["memories"]
    return stored


async def _full(client: Client, number: str, user_id: str = "default") -> str:
    """The full id of the memory that the block's memory number `number` ("#42") names, as `get_memory` resolves it."""
    got = await _call(client, "get_memory", {"memory_id": number, "user_id": user_id})
    memory_id: str = got["memory"]["memory_id"]
    return memory_id


def _lines(text: str) -> list[re.Match[str]]:
    found = [LINE.match(line) for line in text.splitlines() if line.startswith("- ")]
    assert all(found), text
    return [match for match in found if match is not None]


async def _contents(client: Client, user_id: str = "default") -> dict[str, str]:
    listed = await _call(client, "list_memories", {"user_id": user_id, "limit": 500})
    return {memory["memory_id"]: memory["content"] for memory in listed["memories"]}


async def test_recall_puts_the_profile_first_then_relevant_memories_each_whole_with_its_id(client: Client) -> None:
    await _store(client, LIFE)
    result = await _call(client, "recall", {"topic": "Who does Jason play chess with?"})
    text = result["text"]
    assert text.index("What the user told you about themselves") < text.index("Relevant memories")
    assert "User's name is Jason Thompson" in text.split("Relevant memories")[0]
    assert "chess with their neighbour" in text.split("Relevant memories")[1]
    # Every line is a whole stored memory with its own id; the ids listed are exactly those in the text.
    contents = await _contents(client)
    lines = _lines(text)
    assert [line["id"] for line in lines] != []
    for line in lines:
        assert contents[await _full(client, line["id"])] == line["content"]
    # The block shows memory numbers, the result lists full ids, in block order.
    assert result["memory_ids"] == [await _full(client, line["id"]) for line in lines]
    assert len(set(result["memory_ids"])) == len(result["memory_ids"])  # nothing twice
    assert set(result["profile_ids"]) | set(result["relevant_ids"]) == set(result["memory_ids"])
    assert result["tokens"] == estimate_tokens(text) <= result["budget"] == 1500


async def test_recall_groups_by_category(client: Client) -> None:
    await _store(client, LIFE)
    text = (await _call(client, "recall", {"topic": "everything about the user"}))["text"]
    listed = await _call(client, "list_memories", {"limit": 100})
    category_of = {memory["memory_id"]: memory["category"] for memory in listed["memories"]}
    heading = ""
    for line in text.splitlines():
        if line.startswith("### "):
            heading = line[4:]
        elif line.startswith("## "):
            heading = ""
        elif line.startswith("- "):
            found = LINE.match(line)
            assert found is not None
            assert category_of[await _full(client, found["id"])] == heading, line


@pytest.mark.parametrize("budget", [50, 60, 90, 120, 200, 333, 700])
async def test_recall_is_never_over_budget_and_never_cuts_a_memory(client: Client, budget: int) -> None:
    long = "I collect " + ", ".join(f"stamps from country number {n}" for n in range(60)) + "."
    await _store(client, [*LIFE, long])
    result = await _call(client, "recall", {"topic": "stamps chess dog tea", "budget": budget})
    assert estimate_tokens(result["text"]) <= budget
    contents = await _contents(client)
    for line in _lines(result["text"]):
        assert contents[await _full(client, line["id"])] == line["content"]  # whole, or not at all
    if budget >= 200:
        assert result["memory_ids"], "a 200-token budget fits some memories"
    assert result["left_out"] > 0  # the long one never fits these budgets


async def test_recall_budget_grows_the_block_monotonically(client: Client) -> None:
    await _store(client, LIFE)
    small = await _call(client, "recall", {"topic": "chess dog tea hiking jazz", "budget": 120})
    large = await _call(client, "recall", {"topic": "chess dog tea hiking jazz", "budget": 3000})
    assert len(small["memory_ids"]) < len(large["memory_ids"]) == len(await _contents(client))
    assert large["left_out"] == 0


async def test_recall_uses_only_the_newest_version_of_a_fact(client: Client) -> None:
    await _store(client, ["I live in Lisbon."])
    await _store(client, ["I moved to Berlin."])
    text = (await _call(client, "recall", {"topic": "Where does the user live, Lisbon or Berlin?"}))["text"]
    assert "User moved to Berlin" in text
    assert "Lisbon" not in text


async def test_recall_rejects_a_budget_out_of_range_and_another_users_data_stays_apart(client: Client) -> None:
    for budget in (10, 100_000):
        result = await client.call_tool("recall", {"topic": "x", "budget": budget})
        assert result.is_error
    await _store(client, ["I have a cat called Tom."], user_id="bob")
    await _store(client, ["I have a dog called Biggie."], user_id="alice")
    text = (await _call(client, "recall", {"topic": "cat dog pets", "user_id": "alice"}))["text"]
    assert "Biggie" in text and "Tom" not in text


async def test_recall_without_a_topic_gives_profile_and_upcoming(client: Client) -> None:
    now = datetime.now(ZoneInfo("UTC"))
    await _store(client, [*LIFE[:3], "I have a dentist appointment tomorrow at 2pm."], occurred_at=now.isoformat())
    result = await _call(client, "recall", {})
    assert result["relevant_ids"] == []
    assert "User's name is Jason Thompson" in result["text"]
    upcoming = result["text"].split("## Upcoming (next 7 days)")[1]
    tomorrow = (now + timedelta(days=1)).date().isoformat()
    assert f"- {tomorrow} 14:00: User has a dentist appointment" in upcoming
    assert len(result["upcoming_ids"]) == 1


# --- profile ---------------------------------------------------------------------------------------


async def _profile(client: Client, user_id: str = "default") -> str:
    read = await client.read_resource(f"memory://{user_id}/profile")
    assert isinstance(read.contents[0], TextResourceContents)
    assert read.contents[0].mime_type == "text/markdown"
    return read.contents[0].text


async def test_profile_resource_lists_the_stable_core_by_slot(client: Client) -> None:
    await _store(client, LIFE)
    profile = await _profile(client)
    sections = {part.split("\n", 1)[0]: part for part in profile.split("## ")[1:]}
    assert "Jason Thompson" in sections["name"]
    assert "Lisbon" in sections["home"]
    assert "AWS" in sections["work"]
    assert "Anna" in sections["family"]
    assert "Biggie" in sections["pets"]
    assert "Portuguese" in sections["languages"]
    assert "peanuts" in sections["health"]
    assert "tea" in sections["preferences"]
    assert "jazz" not in profile and "chess" not in profile  # episodes are not the profile


async def test_profile_follows_a_change_of_fact(client: Client) -> None:
    await _store(client, ["I live in Lisbon.", "I work as a nurse at the city hospital."])
    assert "Lisbon" in await _profile(client)
    await _store(client, ["I moved to Berlin."])
    profile = await _profile(client)
    home = profile.split("## home")[1].split("##")[0]
    assert "Berlin" in home and "Lisbon" not in profile
    # Kept both active on purpose: the single-valued home slot still shows only the newest.
    await _store(client, ["I live in Madrid."], resolution_strategy="keep_both")
    home = (await _profile(client)).split("## home")[1].split("##")[0]
    assert "Madrid" in home and "Berlin" not in home


async def test_profile_names_a_user_who_introduced_themselves(client: Client) -> None:
    await _store(client, ["Hi, I'm Amara Okafor.", "I'm Nigerian.", "I live in Rotterdam."])
    profile = await _profile(client)
    assert "Amara Okafor" in profile.split("## name")[1].split("##")[0]
    assert "Nigerian" not in profile.split("## name")[1].split("##")[0]


@pytest.mark.parametrize(
    "announcement",
    [
        "Big news: I accepted a job at the Seismological Center.",
        "I just started a new job at the Seismological Center.",
    ],
)
async def test_profile_follows_a_new_job(client: Client, announcement: str) -> None:
    await _store(client, ["I work as a nurse at the city hospital.", announcement])
    # Newer facts about work that are not the job itself must not push it out of the slot.
    await _store(client, ["My new boss is Dr. Reyes.", "My office is on the third floor.", "My team has six people."])
    work = (await _profile(client)).split("## work")[1].split("##")[0]
    assert "Seismological Center" in work and "city hospital" not in work


async def test_profile_of_an_unknown_user_is_empty_and_a_bad_user_id_is_refused(client: Client) -> None:
    assert "Nothing known yet." in await _profile(client, "nobody")
    with pytest.raises(MCPError):
        await client.read_resource("memory://not valid!/profile")


# --- upcoming events -------------------------------------------------------------------------------


async def test_upcoming_events_expands_birthdays_and_weekly_classes(client: Client) -> None:
    zone = ZoneInfo("UTC")
    now = datetime.now(zone)
    today = now.date()
    in_three = today + timedelta(days=3)
    in_forty = today + timedelta(days=40)
    said = (now - timedelta(days=400)).isoformat()  # a year and more ago: the stored dates are in the past
    weekday = (today + timedelta(days=2)).strftime("%A")
    await _store(
        client,
        [
            f"My birthday is on {in_three.strftime('%B')} {in_three.day}.",
            f"My mother's birthday is on {in_forty.strftime('%B')} {in_forty.day}.",
            f"I have a pottery class every {weekday}.",
        ],
        occurred_at=said,
    )
    await _store(
        client,
        ["I have a dentist appointment tomorrow at 2pm.", "I have a job interview in 20 days."],
        occurred_at=now.isoformat(),
    )
    events = (await _call(client, "upcoming_events", {"days": 7}))["events"]
    found = [(event["date"][:10], event["recurrence"], event["content"]) for event in events]
    tomorrow = (today + timedelta(days=1)).isoformat()
    assert found == sorted(found, key=lambda event: event[0])
    assert (in_three.isoformat(), "yearly") in [(d, k) for d, k, c in found if "User's birthday" in c]
    assert ((today + timedelta(days=2)).isoformat(), "weekly") in [(d, k) for d, k, c in found if "pottery" in c]
    assert (tomorrow, None) in [(d, k) for d, k, c in found if "dentist" in c]
    assert not any("mother" in c or "interview" in c for _, _, c in found)  # beyond 7 days
    later = (await _call(client, "upcoming_events", {"days": 45}))["events"]
    assert any("mother" in event["content"] and event["date"] == in_forty.isoformat() for event in later)
    assert any("interview" in event["content"] for event in later)
    assert sum("pottery" in event["content"] for event in later) == 1  # the next occurrence only


async def test_upcoming_events_rejects_days_out_of_range(client: Client) -> None:
    for days in (-1, 10_000):
        assert (await client.call_tool("upcoming_events", {"days": days})).is_error


# --- prompts and completion ------------------------------------------------------------------------


async def test_prompts_list_recall_and_remember_with_their_arguments(client: Client) -> None:
    prompts = {prompt.name: prompt for prompt in (await client.list_prompts()).prompts}
    assert set(prompts) >= {"recall", "remember"}
    assert {argument.name for argument in prompts["recall"].arguments or []} == {"topic", "budget", "user_id"}
    remember = {argument.name: argument for argument in prompts["remember"].arguments or []}
    assert remember["conversation"].required is True


async def test_recall_prompt_carries_the_recall_block(client: Client) -> None:
    await _store(client, LIFE)
    prompt = await client.get_prompt("recall", {"topic": "chess", "budget": "400"})
    content = prompt.messages[0].content
    assert prompt.messages[0].role == "user" and isinstance(content, TextContent)
    block = (await _call(client, "recall", {"topic": "chess", "budget": 400}))["text"]
    assert block in content.text
    with pytest.raises(MCPError) as refused:
        await client.get_prompt("recall", {"budget": "lots"})
    assert "not a whole number" in str(refused.value)
    with pytest.raises(MCPError) as refused:
        await client.get_prompt("recall", {"budget": "5"})
    assert "out of range" in str(refused.value)


async def test_remember_prompt_asks_for_one_store_memories_call_with_facts(client: Client) -> None:
    conversation = "User: I just adopted a cat called Miso.\nAssistant: Congratulations!"
    prompt = await client.get_prompt("remember", {"conversation": conversation, "user_id": "alice"})
    content = prompt.messages[0].content
    assert isinstance(content, TextContent)
    assert conversation in content.text
    assert "`store_memories` once" in content.text and "`items`" in content.text and '"alice"' in content.text
    for field in ("message", "speaker", "occurred_at", "facts", "content", "category", "event_time", "entities"):
        assert f'"{field}"' in content.text


async def test_user_id_completion_lists_users_with_the_prefix(client: Client) -> None:
    for user in ("alice", "albert", "bob"):
        await _store(client, ["I have a dog called Rex."], user_id=user)
    prompt = PromptReference(type="ref/prompt", name="recall")
    found = await client.complete(prompt, {"name": "user_id", "value": "al"})
    assert found.completion.values == ["albert", "alice"]
    template = ResourceTemplateReference(type="ref/resource", uri="memory://{user_id}/profile")
    assert (await client.complete(template, {"name": "user_id", "value": ""})).completion.values == [
        "albert",
        "alice",
        "bob",
    ]
    assert (await client.complete(template, {"name": "user_id", "value": "a%"})).completion.values == []
    assert (await client.complete(prompt, {"name": "topic", "value": "a"})).completion.values == []


def test_token_estimate_counts_words_digits_and_symbols() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("User has a dog") == 4
    assert estimate_tokens("photography") == 3  # 11 letters: ceil(11 / 5)
    assert estimate_tokens("## Jason's") == 1 + 1 + 1
    assert estimate_tokens("2024-08-20") == 2 + 1 + 1 + 1 + 1
    assert estimate_tokens("mem_3f2a9c0b1d4e5f60") == 17
    assert estimate_tokens("a\nb") == 3
    assert estimate_tokens("naïve") == 3  # "na", "ï", "ve"


async def test_profile_of_a_second_life_written_after_the_slots(client: Client) -> None:
    # Held-out phrasing, written after PROFILE_SLOTS was tuned: none of these sentences was used to tune it.
    await _store(
        client,
        [
            "I'm originally from Porto.",
            "My girlfriend Mia is a violinist.",
            "We adopted a hamster named Nugget.",
            "I'm a high school teacher.",
            "My dad retired last year.",
            "I'm lactose intolerant.",
            "I really enjoy board games.",
            "I live in Utrecht now.",
            "My colleague Sam is from Ghent.",
        ],
    )
    profile = await _profile(client)
    slots = {part.split("\n", 1)[0]: part for part in profile.split("## ")[1:]}
    assert "Utrecht" in slots["home"] and "Porto" in slots["origin"]
    assert "teacher" in slots["work"]
    assert "Mia" in slots["family"].split("\n")[1]  # the partner first
    assert "Nugget" in slots["pets"]
    assert "lactose" in slots["health"]
    assert "board games" in slots["preferences"]


async def test_recall_without_ids_fits_more_memories_and_still_lists_them(client: Client) -> None:
    await _store(client, LIFE)
    with_ids = await _call(client, "recall", {"topic": "chess dog tea hiking jazz", "budget": 150})
    without = await _call(client, "recall", {"topic": "chess dog tea hiking jazz", "budget": 150, "include_ids": False})
    assert re.search(r" \(#\d+\)$", with_ids["text"], re.M) and not re.search(r"\(#\d+\)", without["text"])
    assert len(without["memory_ids"]) > len(with_ids["memory_ids"])
    contents = await _contents(client)
    shown = [line[2:] for line in without["text"].splitlines() if line.startswith("- ")]
    assert shown == [contents[memory_id] for memory_id in without["memory_ids"]]
    assert without["tokens"] <= 150


async def test_profile_keeps_only_what_is_about_the_speaker(client: Client) -> None:
    for message in ("Horses have such grace.", "I have a horse called Star.", "Those kids will be so happy."):
        await _call(client, "store_memory", {"message": message, "speaker": "Caroline", "user_id": "c"})
    profile = await _profile(client, "c")
    assert "Caroline has a horse called Star" in profile
    assert "grace" not in profile and "kids" not in profile


async def test_a_recurring_date_kept_without_a_year_comes_round_every_year(client: Client) -> None:
    # Issue 10 stores birthdays and anniversaries as a month and day in the content, with no event_time;
    # upcoming_events must still place them on their next day, in either word order.
    today = datetime.now(ZoneInfo("UTC")).date()
    in_two = today + timedelta(days=2)
    in_five = today + timedelta(days=5)
    await _store(
        client,
        [
            f"Our anniversary is on the {in_two.day}th of {in_two.strftime('%B')}.",
            f"My sister Ana's birthday is {in_five.strftime('%B')} {in_five.day}.",
        ],
    )
    events = (await _call(client, "upcoming_events", {"days": 7}))["events"]
    assert [(event["date"][:10], event["recurrence"]) for event in events] == [
        (in_two.isoformat(), "yearly"),
        (in_five.isoformat(), "yearly"),
    ]
    assert all(event["event_time"] is None for event in events)


async def test_a_pinned_fact_leads_its_profile_slot_over_a_newer_one(client: Client) -> None:
    # Issue 15's profile puts pinned and important memories (issue 11) first within a slot.
    first = await _store(client, ["I live in Porto."])
    await _store(client, ["I live in Madrid."], resolution_strategy="keep_both")
    home = (await _profile(client)).split("## home")[1].split("##")[0]
    assert "Madrid" in home and "Porto" not in home  # newest first while neither is pinned
    await _call(client, "pin_memory", {"memory_id": first[0]["memory_id"]})
    home = (await _profile(client)).split("## home")[1].split("##")[0]
    assert "Porto" in home and "Madrid" not in home


async def _wait_for_meaning(client: Client, user_id: str = "default") -> None:
    for _ in range(240):
        found = await _call(client, "search_memories", {"query": "anything", "user_id": user_id})
        if found["mode"] == "hybrid":
            return
        await anyio.sleep(0.25)
    raise AssertionError("the embedding model did not become ready")


async def test_recall_fills_the_block_with_memories_near_by_meaning_that_search_leaves_out(client: Client) -> None:
    await _store(client, LIFE)
    await _wait_for_meaning(client)
    found = await _call(client, "search_memories", {"query": "Biggie", "limit": 100})
    searched = {hit["memory_id"] for hit in found["results"]}
    block = await _call(client, "recall", {"topic": "Biggie", "budget": 1500})
    contents = await _contents(client)
    extra = [memory_id for memory_id in block["relevant_ids"] if memory_id not in searched]
    assert extra, (found["results"], block["text"])
    # Search's own best hit still leads: the neighbours by meaning come after what matches.
    best = found["results"][0]["memory_id"]
    assert best in block["memory_ids"]
    assert all(contents[memory_id] in block["text"] for memory_id in extra)


async def test_recall_takes_a_whole_user_message_longer_than_a_search_query(client: Client) -> None:
    await _store(client, LIFE)
    message = (
        "Hey, quick one before I forget: my sister is visiting next month and she keeps asking which "
        "restaurants near the river serve something without peanuts, because last time her kids got "
        "sick at a wedding buffet and nobody could tell which sauce had nuts; also remind me what "
        "language classes I signed up for, and whether Biggie needs his vaccination soon?"
    )
    refused = await client.call_tool("search_memories", {"query": message})
    assert refused.is_error  # beyond search's bounds (issue 12) ...
    block = await _call(client, "recall", {"topic": message, "budget": 1500})  # ... yet recall takes it
    contents = await _contents(client)
    relevant = [contents[memory_id] for memory_id in block["relevant_ids"]] + [
        contents[memory_id] for memory_id in block["profile_ids"]
    ]
    assert any("peanuts" in content for content in relevant)
    assert any("Biggie" in content for content in relevant)


def test_fused_rankings_keep_both_sides_and_weigh_the_second_less() -> None:
    from harmonia_mcp.context import fuse_rankings

    # "b" is second in both lists and beats "a", first in one list only; "z", found only by the second list,
    # still ranks, below what the first list put at the same rank.
    assert fuse_rankings(["a", "b", "c"], ["x", "b", "z"], 1.0) == ["b", "a", "x", "c", "z"]
    assert fuse_rankings(["a", "b", "c"], ["x", "b", "z"], 0.4) == ["b", "a", "c", "x", "z"]
    assert fuse_rankings(["a", "a", "b"], []) == ["a", "b"]


async def test_a_line_shows_its_date_only_when_its_memory_does_not_say_it(client: Client) -> None:
    said = "2024-03-10T09:00:00+00:00"
    await _store(client, ["I flew to Rome yesterday.", "I'm moving to Berlin next month."], occurred_at=said)
    await _call(
        client,
        "store_memory",
        {"facts": [{"content": "User has a dentist appointment", "event_time": "2024-03-12T14:00:00+00:00"}]},
    )
    text = (await _call(client, "recall", {"topic": "Rome Berlin dentist appointment"}))["text"]
    when = {line["content"]: line["when"] for line in _lines(text)}
    # The rules wrote the absolute time into these two: a date in front would say it twice.
    assert when["User flew to Rome on 2024-03-09"] is None
    assert when["User is moving to Berlin in April 2024"] is None
    assert when["User has a dentist appointment"] == "2024-03-12 14:00"

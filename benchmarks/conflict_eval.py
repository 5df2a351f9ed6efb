"""Reconciliation benchmark: scripted message sequences and the state each should end in.

Starts `harmonia-mcp` as a child process (stdio, rules extractor, a fresh database in a temporary
folder) and drives it with the official `mcp` stdio client, one `user_id` per sequence. After each
sequence it lists the user's memories (including superseded and deleted ones) and checks them against
the expected end state:

- `active`: one phrase per memory that must be active; each phrase matches exactly one active memory
  (case-insensitive substring) and there is no other active memory;
- `superseded`: the same for memories that must be superseded (none by default).

It prints the share of sequences that end in their expected state, overall and per kind, and counts
"unrelated violations": sequences of kind `unrelated` where any memory was superseded, updated or
merged (the target is none).

    .venv/bin/python benchmarks/conflict_eval.py [--verbose] [--embedder none]

The sequences are this project's own, written for this benchmark (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from harmonia_mcp.child import call_tool, server_parameters

OCCURRED_AT = "2026-03-02T10:00:00+00:00"


@dataclass(frozen=True)
class Sequence:
    """Messages sent in order (with `strategy`, or the server's default) and the expected end state."""

    kind: str
    messages: tuple[str, ...]
    active: tuple[str, ...]
    superseded: tuple[str, ...] = ()
    strategy: str | None = None
    # For complements: the last memory must be linked as related to the one matching this phrase.
    linked_to: str | None = None
    # When each message was said (ISO-8601), for time order; OCCURRED_AT for all when empty.
    said: tuple[str, ...] = ()


def _s(kind: str, messages: list[str], active: list[str], superseded: list[str] | None = None, **kw: Any) -> Sequence:
    if "said" in kw:
        kw["said"] = tuple(kw["said"])
    return Sequence(kind, tuple(messages), tuple(active), tuple(superseded or ()), **kw)


_EARLY, _LATE = "2024-01-01T10:00:00+00:00", "2026-11-01T10:00:00+00:00"


SEQUENCES: list[Sequence] = [
    # Exact repeats.
    _s("duplicate", ["I have a dog called Biggie", "I have a dog called Biggie"], ["dog called Biggie"]),
    _s("duplicate", ["My name is Jason", "My name is Jason."], ["Jason"]),
    _s("duplicate", ["I'm allergic to peanuts", "I am allergic to peanuts"], ["peanuts"]),
    _s("duplicate", ["I live in Lisbon", "Oh, and I live in Lisbon"], ["Lisbon"]),
    _s("duplicate", ["I'm vegetarian", "Just so you know, I'm vegetarian."], ["vegetarian"]),
    # Rewordings of the same fact.
    _s("rewording", ["I have a dog called Biggie", "I have a dog named Biggie"], ["Biggie"]),
    _s("rewording", ["I love sushi", "I really love sushi"], ["sushi"]),
    _s("rewording", ["I work at TechCorp", "I work for TechCorp"], ["TechCorp"]),
    _s("rewording", ["My favorite color is blue", "My favourite colour is blue"], ["blue"]),
    _s("rewording", ["I live in Lisbon", "I live in Lisbon, Portugal"], ["Lisbon"]),
    # Job.
    _s("update:job", ["I work at TechCorp", "I now work at NewCorp"], ["NewCorp"], ["TechCorp"]),
    _s("update:job", ["I work at TechCorp", "I just started a new job at NewCorp"], ["NewCorp"], ["TechCorp"]),
    _s("update:job", ["I work as a nurse", "I now work as a teacher"], ["teacher"], ["nurse"]),
    _s("update:job", ["I work at Google", "I work at Microsoft now"], ["Microsoft"], ["Google"]),
    _s("update:job", ["I work at TechCorp", "I don't work at TechCorp anymore"], ["anymore"], ["works at TechCorp"]),
    # Home.
    _s("update:home", ["I live in Lisbon", "I now live in Berlin"], ["Berlin"], ["Lisbon"]),
    _s("update:home", ["I live in Lisbon", "I just moved to Berlin"], ["Berlin"], ["Lisbon"]),
    _s("update:home", ["I live in Boston", "We moved to Chicago last year"], ["Chicago"], ["Boston"]),
    _s("update:home", ["My sister Maria lives in Lisbon", "Maria now lives in Porto"], ["Porto"], ["Lisbon"]),
    # Pets.
    _s(
        "update:pet",
        ["Biggie loves his stuffed Costco chicken", "Biggie now loves his yellow ball"],
        ["yellow ball"],
        ["Costco chicken"],
    ),
    _s("update:pet", ["My dog's name is Rex", "My dog's name is now Max"], ["Max"], ["Rex"]),
    _s("update:pet", ["My cat Luna loves tuna", "Luna now loves salmon"], ["salmon"], ["tuna"]),
    # Partner.
    _s("update:partner", ["My girlfriend is Anna", "My girlfriend is now Maria"], ["Maria"], ["Anna"]),
    _s("update:partner", ["I'm dating Tom", "I'm now dating Sam"], ["Sam"], ["Tom"]),
    _s("update:partner", ["My girlfriend is Anna", "I'm now dating Sam"], ["Sam"], ["Anna"]),
    # Preferences.
    _s("update:preference", ["My favorite color is blue", "My favorite color is now green"], ["green"], ["blue"]),
    _s("update:preference", ["I prefer tea", "I now prefer coffee"], ["coffee"], ["tea"]),
    _s("update:preference", ["I'm vegetarian", "I'm vegan now"], ["vegan"], ["vegetarian"]),
    _s("update:preference", ["My favorite food is pizza", "My favourite food is sushi now"], ["sushi"], ["pizza"]),
    _s("update:preference", ["I drive a Honda Civic", "I now drive a Tesla"], ["Tesla"], ["Honda"]),
    # Dates moved.
    _s(
        "date_moved",
        ["My dentist appointment is on May 3", "My dentist appointment moved to May 10"],
        ["moved"],
        ["is on"],
    ),
    _s(
        "date_moved",
        ["My dentist appointment is on May 3", "My dentist appointment is now on May 10"],
        ["now on"],
        ["is on"],
    ),
    _s("date_moved", ["The party is on Friday", "The party is now on Saturday"], ["now on"], ["is on"]),
    _s("date_moved", ["My flight to Paris is on June 5", "My flight to Paris is now on June 7"], ["now on"], ["is on"]),
    _s("date_moved", ["My exam is on April 14", "My exam was moved to April 20"], ["moved"], ["is on"]),
    # Complements: both kept, the new one linked to the old.
    _s("complement", ["I have a dog called Biggie", "Biggie is a beagle"], ["dog", "beagle"], linked_to="dog"),
    _s(
        "complement",
        ["My sister Maria lives in Lisbon", "Maria is a nurse"],
        ["Lisbon", "nurse"],
        linked_to="Lisbon",
    ),
    _s("complement", ["I work at TechCorp", "TechCorp is based in Austin"], ["works", "Austin"], linked_to="works"),
    _s("complement", ["I have a cat called Luna", "Luna is a Siamese"], ["cat", "Siamese"], linked_to="cat"),
    _s(
        "complement",
        ["My brother Tom lives in Madrid", "Tom loves football"],
        ["Madrid", "football"],
        linked_to="Madrid",
    ),
    # Unrelated facts that share a word: both stay active, nothing superseded or merged.
    _s("unrelated", ["I love sushi", "I love hiking"], ["sushi", "hiking"]),
    _s("unrelated", ["I love hiking", "My sister loves hiking"], ["User loves", "sister"]),
    _s("unrelated", ["I work at TechCorp", "My brother works at TechCorp"], ["User works", "brother"]),
    _s("unrelated", ["My favorite color is blue", "My favorite food is pizza"], ["blue", "pizza"]),
    _s("unrelated", ["I have a dog called Biggie", "I have a cat called Luna"], ["Biggie", "Luna"]),
    _s("unrelated", ["I have a dog called Biggie", "I have a meeting on Monday"], ["Biggie", "meeting"]),
    _s("unrelated", ["I play tennis", "I play the piano"], ["tennis", "piano"]),
    _s("unrelated", ["I live in Lisbon", "My parents live in Porto"], ["User lives", "parents"]),
    _s("unrelated", ["I prefer tea", "I prefer window seats"], ["tea", "window"]),
    _s(
        "unrelated",
        ["My dentist appointment is on May 3", "My car service appointment is on May 3"],
        ["dentist", "car service"],
    ),
    _s("unrelated", ["I work at TechCorp", "I work out every morning"], ["TechCorp", "morning"]),
    _s("unrelated", ["I live in Lisbon", "I love Lisbon in spring"], ["lives", "spring"]),
    # Each explicit strategy once.
    _s("strategy", ["I work at TechCorp", "I now work at NewCorp"], ["NewCorp"], strategy="update"),
    _s("strategy", ["I have a dog called Biggie", "Biggie is a beagle"], ["beagle called Biggie"], strategy="merge"),
    _s(
        "strategy",
        ["My dentist appointment is on May 3", "My dentist appointment is now on May 10"],
        ["10"],
        ["3"],
        strategy="version",
    ),
    _s(
        "strategy",
        ["My favorite color is blue", "My favorite color is now green"],
        ["blue", "green"],
        strategy="keep_both",
    ),
    _s("strategy", ["I'm dating Tom", "I'm now dating Sam"], ["Tom"], strategy="skip"),
]


# Issue 10: changes of mind, written after the patterns in conflicts.py (so in-sample).
CHANGES_OF_MIND: list[Sequence] = [
    _s(
        "negation",
        ["I'm allergic to cats, sadly", "It turns out I'm not allergic to cats after all"],
        ["not allergic"],
        ["allergic to cats"],
    ),
    _s("negation", ["I eat steak at least once a week", "I don't eat meat anymore"], ["meat"], ["steak"]),
    _s("negation", ["I live in Lisbon", "I don't live in Lisbon anymore"], ["anymore"], ["lives in Lisbon"]),
    _s("negation", ["I drink coffee every morning", "I no longer drink coffee"], ["no longer"], ["every morning"]),
    _s("negation", ["I play tennis", "I don't play tennis anymore"], ["anymore"], ["plays tennis"]),
    _s("retraction", ["I play tennis on Sundays", "I stopped playing tennis"], ["stopped"], ["Sundays"]),
    _s("retraction", ["I work at Farfetch", "I quit my job"], ["quit"], ["Farfetch"]),
    _s("retraction", ["I smoke", "I quit smoking"], ["quit"], ["User smokes"]),
    _s("retraction", ["I eat bacon every morning", "I'm vegetarian now"], ["vegetarian"], ["bacon"]),
    _s("retraction", ["I'm dating Tom", "Tom and I broke up"], ["broke up"], ["dating Tom"]),
    _s(
        "replacement",
        ["I work as a product designer at Farfetch", "Actually I switched jobs, I now work at Stripe"],
        ["Stripe"],
        ["Farfetch"],
    ),  # fmt: skip
    _s("replacement", ["I prefer coffee", "I changed my mind, I prefer tea"], ["tea"], ["coffee"]),
    _s("replacement", ["I live in Lisbon", "I moved out of Lisbon"], ["moved out"], ["lives in Lisbon"]),
    _s("replacement", ["My boyfriend is Leo", "I broke up with Leo"], ["broke up"], ["boyfriend"]),
    _s("single_valued", ["I'm 34 years old", "I'm 35 years old"], ["35"], ["34"]),
    _s("single_valued", ["My favourite band is Muse", "My favorite band is Radiohead"], ["Radiohead"], ["Muse"]),
    _s("single_valued", ["My husband is Tom", "My husband is Mark"], ["Mark"], ["Tom"]),
    _s("single_valued", ["I work at Google", "I work at Meta"], ["Meta"], ["Google"]),
    _s("multi_valued", ["I'm allergic to cats", "I'm allergic to peanuts"], ["cats", "peanuts"]),
    _s("multi_valued", ["I have a sister", "I have a brother"], ["sister", "brother"]),
    _s("multi_valued", ["I speak Spanish", "I speak French"], ["Spanish", "French"]),
    _s("multi_valued", ["I have a dog called Pixel", "I have a cat called Miso"], ["Pixel", "Miso"]),
    _s("multi_valued", ["I eat fish", "I don't eat meat anymore"], ["fish", "meat"]),
    _s("time_order", ["I live in Berlin", "I live in Lisbon"], ["Berlin"], ["Lisbon"], said=[_LATE, _EARLY]),
    _s("time_order", ["I live in Lisbon", "I live in Berlin"], ["Berlin"], ["Lisbon"], said=[_EARLY, _LATE]),
    _s("time_order", ["I work at Stripe", "I work at Farfetch"], ["Stripe"], ["Farfetch"], said=[_LATE, _EARLY]),
    _s(
        "time_order",
        ["I don't eat meat anymore", "I eat steak every week"],
        ["meat"],
        ["steak"],
        said=[_LATE, _EARLY],
    ),
    _s("time_order", ["I'm 35 years old", "I'm 34 years old"], ["35"], ["34"], said=[_LATE, _EARLY]),
    _s("unrelated", ["I work at Farfetch", "I stopped eating meat"], ["Farfetch", "meat"]),
    _s("unrelated", ["I'm allergic to cats", "My sister isn't allergic to cats"], ["User is allergic", "sister"]),
    _s("unrelated", ["I play tennis", "I stopped playing the piano"], ["tennis", "piano"]),
    _s("unrelated", ["I live in Lisbon", "My sister moved out of Porto"], ["User lives", "sister"]),
]

# Issue 10 held out: written after CHANGES_OF_MIND passed, run once as they stand, not tuned on.
HELD_OUT_CHANGES: list[Sequence] = [
    _s("negation", ["I'm lactose intolerant", "Turns out I'm not lactose intolerant"], ["not"], ["User is lactose"]),
    _s("negation", ["I drive a Volvo", "I don't drive anymore"], ["anymore"], ["Volvo"]),
    _s("negation", ["I eat pork", "I no longer eat meat"], ["meat"], ["pork"]),
    _s("retraction", ["I run every morning", "I stopped running"], ["stopped"], ["every morning"]),
    _s("retraction", ["I work for the city council", "I left my job at the city council"], ["left"], ["works for"]),
    _s("retraction", ["My girlfriend is Nina", "Nina and I split up"], ["split"], ["girlfriend"]),
    # Its expected end state was first written without the superseded diet (a mistake in writing it).
    _s("replacement", ["I'm a vegetarian", "I changed my mind, I eat fish now"], ["fish"], ["vegetarian"]),
    _s("replacement", ["I live in Porto", "We moved out of Porto last spring"], ["moved out"], ["lives in Porto"]),
    _s("single_valued", ["My favorite color is green", "My favourite colour is purple"], ["purple"], ["green"]),
    _s("single_valued", ["I'm 29", "I turned 30"], ["30"], ["29"]),
    _s("multi_valued", ["I'm allergic to dust", "I'm allergic to shellfish"], ["dust", "shellfish"]),
    _s("multi_valued", ["I speak German", "I speak Italian"], ["German", "Italian"]),
    _s("multi_valued", ["I have a son", "I have a daughter"], ["son", "daughter"]),
    _s("time_order", ["I work at Figma", "I work at Adobe"], ["Figma"], ["Adobe"], said=[_LATE, _EARLY]),
    _s("time_order", ["My partner is Alex", "My partner is Sam"], ["Alex"], ["Sam"], said=[_LATE, _EARLY]),
    _s("unrelated", ["I work at the hospital", "I quit smoking"], ["hospital", "smoking"]),
    _s("unrelated", ["I love Lisbon", "I moved out of my parents' house"], ["Lisbon", "parents"]),
    _s("unrelated", ["My brother plays chess", "I stopped playing chess"], ["brother", "User"]),
]


# Held out for issue 9's ninth round: written by a helper that saw only this file (never conflicts.py), after the
# round's first readings (openers, "a meat eater", "has accepted a post as ...") were chosen. Its misses then led to
# more readings (perfect tenses, "has gone vegan", "gave up coffee"), so it is no longer held out: see the next list.
HELD_OUT_CHANGES_2: list[Sequence] = [
    # Changes of mind: the later message makes the earlier fact stale.
    _s(
        "replacement",
        ["I'm a senior software engineer at Klarna", "I've taken a position as head of data at Monzo"],
        ["Monzo"],
        ["Klarna"],
    ),
    _s(
        "replacement",
        ["I live in Ghent", "I've moved to Antwerp", "Update: I've moved again, this time to Rotterdam"],
        ["Rotterdam"],
        ["Ghent", "Antwerp"],
    ),
    _s(
        "replacement",
        ["I'm a meat eater", "After a year of thinking about it, I've gone vegan"],
        ["vegan"],
        ["meat eater"],
    ),
    _s("replacement", ["I drive a Ford Focus", "I replaced my Ford Focus with a Kia Niro"], ["Niro"], ["Ford Focus"]),
    _s("replacement", ["I cycle to work every day", "These days I take the bus to work"], ["bus"], ["cycle"]),
    _s(
        "replacement",
        ["For work, I'm a data analyst at Ocado", "Big news: I've started a new job at Spotify"],
        ["Spotify"],
        ["Ocado"],
    ),
    _s("retraction", ["I'm a big coffee drinker", "I gave up coffee last month"], ["gave up"], ["coffee drinker"]),
    _s(
        "retraction",
        ["I drink a glass of wine every evening", "I've cut out alcohol completely"],
        ["alcohol"],
        ["wine"],
    ),
    _s(
        "retraction",
        ["I'm engaged to Oskar", "Oskar and I called off the engagement"],
        ["called off"],
        ["engaged to Oskar"],
    ),
    _s(
        "negation",
        ["I'm a member of the Fitness First gym", "I'm no longer a member of the gym"],
        ["no longer"],
        ["Fitness First"],
    ),
    _s("negation", ["I'm on a keto diet", "I'm not doing keto anymore"], ["anymore"], ["keto diet"]),
    _s(
        "negation",
        ["I have a season ticket for Celtic", "I don't have a season ticket anymore"],
        ["anymore"],
        ["Celtic"],
    ),
    _s("single_valued", ["I'm 41 years old", "Update: I'm 42 now"], ["42"], ["41"]),
    _s(
        "single_valued",
        [
            "My favourite cuisine is Thai",
            "My favourite cuisine is Ethiopian now",
            "These days my favourite cuisine is Georgian",
        ],
        ["Georgian"],
        ["Thai", "Ethiopian"],
    ),
    _s("single_valued", ["My phone is an iPhone 12", "My phone is a Samsung Galaxy S24 now"], ["Galaxy"], ["iPhone"]),
    _s("single_valued", ["My boyfriend is Dmitri", "My boyfriend is Kofi these days"], ["Kofi"], ["Dmitri"]),
    # Unrelated look-alikes: both facts stay active, nothing superseded.
    _s(
        "unrelated",
        ["I work as a pharmacist at Boots", "My brother just started as a pharmacist in Leeds"],
        ["Boots", "Leeds"],
    ),
    _s("unrelated", ["I live in Valencia", "My best friend Lucia has just moved to Seville"], ["Valencia", "Seville"]),
    _s("unrelated", ["I love ramen", "I'm crazy about tacos"], ["ramen", "tacos"]),
    _s(
        "unrelated",
        ["I have a tortoise called Shelby", "We just adopted a rabbit called Clover"],
        ["Shelby", "Clover"],
    ),
    _s("unrelated", ["I'm fluent in Dutch", "I've started learning Korean"], ["Dutch", "Korean"]),
    _s("unrelated", ["I live in Oslo", "I spent two weeks in Lima last summer"], ["Oslo", "Lima"]),
    _s("unrelated", ["I work at Siemens", "My wife has accepted a job at Bosch"], ["Siemens", "Bosch"]),
    _s("unrelated", ["I grew up in Aberdeen", "These days I live in Glasgow"], ["Aberdeen", "Glasgow"]),
]


# Held out (third set): changes of mind and look-alikes as chatted. Written by a helper that read only
# benchmarks/conflict_eval.py (for the format, and to avoid its sentences, names, places, companies and foods).
# A second held-out set for the ninth round: written by another helper (same brief, this file only) after the
# readings fitted to HELD_OUT_CHANGES_2's misses were chosen; run as written, never tuned on.
HELD_OUT_CHANGES_3: list[Sequence] = [
    # Changes of mind: the later message makes the earlier fact stale.
    # Jobs.
    _s(
        "replacement",
        [
            "I'm a principal infrastructure reliability engineer at Cloudflare",
            "So, I've joined Shopify as a staff platform engineer",
        ],
        ["Shopify"],
        ["Cloudflare"],
    ),
    _s(
        "replacement",
        ["I work for Deloitte as an audit associate", "Quick update: I'm now working for KPMG"],
        ["KPMG"],
        ["Deloitte"],
    ),
    _s(
        "replacement",
        [
            "I'm a sous chef at Marlowe's",
            "In March I started as head chef at Hartley's Bistro",
            "As of this month, I'm the executive chef at The Copper Kettle",
        ],
        ["Copper Kettle"],
        ["Marlowe", "Hartley"],
    ),
    # Moves.
    _s("replacement", ["I live in Bristol", "Heads up: we've relocated to Cardiff"], ["Cardiff"], ["Bristol"]),
    _s(
        "replacement",
        ["I'm living in Edinburgh at the moment", "I moved back to Dublin in the summer"],
        ["Dublin"],
        ["Edinburgh"],
    ),
    _s(
        "replacement",
        ["I live in Nantes", "I moved to Lyon last year", "In October we packed up again and moved to Marseille"],
        ["Marseille"],
        ["Nantes", "Lyon"],
    ),
    # Partners: a new partner, a break-up, a divorce.
    _s("replacement", ["I'm in a relationship with Tobias", "I have a new partner, Rafael"], ["Rafael"], ["Tobias"]),
    _s(
        "negation",
        ["I've been dating Ingrid for two years", "Ingrid and I aren't together anymore"],
        ["Ingrid"],
        ["two years"],
    ),
    _s("retraction", ["I'm married to Hiroshi", "Hiroshi and I divorced last year"], ["divorced"], ["married"]),
    # Diets and habits given up.
    _s(
        "retraction",
        ["I stir two spoonfuls of sugar into my porridge", "As of this month I've given up sugar"],
        ["sugar"],
        ["porridge"],
    ),
    _s(
        "retraction",
        ["I drink a can of Red Bull before every shift", "I quit energy drinks back in February"],
        ["energy drinks"],
        ["Red Bull"],
    ),
    _s(
        "negation",
        ["I eat cheese with almost every meal", "Since January I haven't eaten any dairy"],
        ["dairy"],
        ["cheese"],
    ),
    # Age.
    _s("single_valued", ["I'm 57 years old", "I had my 58th birthday on Saturday"], ["58"], ["57"]),
    # A favourite changed (twice).
    _s(
        "single_valued",
        [
            "My favourite film is Paddington",
            "Parasite is my favourite film now",
            "Honestly, Arrival has become my favourite film",
        ],
        ["Arrival"],
        ["Paddington", "Parasite"],
    ),
    # A language no longer studied.
    _s(
        "negation",
        ["I'm taking Japanese evening classes", "I'm no longer studying Japanese"],
        ["Japanese"],
        ["evening"],
    ),
    # A sport stopped.
    _s(
        "retraction",
        ["I play volleyball in a Thursday league", "I stopped playing volleyball in the autumn"],
        ["volleyball"],
        ["Thursday"],
    ),
    # Unrelated look-alikes: both facts stay active, nothing superseded.
    _s(
        "unrelated",
        ["I work as a dental hygienist", "My dad has just retrained as a dental technician"],
        ["hygienist", "technician"],
    ),
    _s(
        "unrelated",
        ["I live in Southampton", "My grandparents have just moved to Bournemouth"],
        ["Southampton", "Bournemouth"],
    ),
    _s("unrelated", ["I do pottery on weekends", "I've recently taken up birdwatching"], ["pottery", "birdwatching"]),
    _s("unrelated", ["I love dumplings", "Lately I can't get enough of falafel"], ["dumplings", "falafel"]),
    _s(
        "unrelated",
        ["I live in Sheffield", "I'm flying to Reykjavik next week for a conference"],
        ["Sheffield", "Reykjavik"],
    ),
    _s("unrelated", ["I eat a lot of lamb", "My husband has stopped eating lamb"], ["a lot of lamb", "husband"]),
    _s(
        "unrelated",
        ["I'm a structural engineer at Arup", "I worked in a chip shop as a teenager"],
        ["Arup", "chip shop"],
    ),
    _s("unrelated", ["My girlfriend is Yara", "My brother's girlfriend is Noor"], ["Yara", "Noor"]),
]


# Written after the classifier was finished and run once as they stand: a check that the rules were not
# only fitted to the sequences above (whose sentences were also used while writing conflicts.py).
HELD_OUT: list[Sequence] = [
    _s("update:job", ["I work for the city council", "I work for a startup now"], ["startup"], ["council"]),
    _s(
        "update:job",
        ["I'm a teacher at Lincoln High", "I now teach at Roosevelt Middle School"],
        ["Roosevelt"],
        ["Lincoln"],
    ),
    _s("update:home", ["I live in Seattle", "I relocated to Denver"], ["Denver"], ["Seattle"]),
    _s("update:home", ["My parents live in Porto", "My parents now live in Faro"], ["Faro"], ["Porto"]),
    _s(
        "update:pet", ["My dog Rocky loves his red frisbee", "Rocky now loves his tennis ball"], ["tennis"], ["frisbee"]
    ),
    _s("update:partner", ["My boyfriend is called Leo", "I'm now dating Marco"], ["Marco"], ["Leo"]),
    _s("update:preference", ["My favorite band is Radiohead", "My favorite band is now Muse"], ["Muse"], ["Radiohead"]),
    _s("date_moved", ["My haircut is on Tuesday", "My haircut is now on Thursday"], ["now on"], ["is on"]),
    _s(
        "date_moved",
        ["The team meeting is on Monday", "The team meeting was moved to Wednesday"],
        ["moved"],
        ["is on"],
    ),
    _s("duplicate", ["I speak Spanish", "I speak Spanish"], ["Spanish"]),
    _s("rewording", ["I'm a big fan of jazz", "I love jazz"], ["jazz"]),
    _s("rewording", ["My hometown is Porto", "My home town is Porto"], ["Porto"]),
    _s(
        "complement",
        ["I have a parrot called Kiwi", "Kiwi is very talkative"],
        ["parrot", "talkative"],
        linked_to="parrot",
    ),
    _s("unrelated", ["I love cooking Italian food", "My mom loves cooking"], ["Italian", "mom"]),
    _s("unrelated", ["I work at the hospital", "My wife works at the hospital"], ["User works", "wife"]),
    _s("unrelated", ["I have a meeting on Monday", "I have a dentist appointment on Monday"], ["meeting", "dentist"]),
    _s("unrelated", ["My favorite movie is Alien", "My favorite book is Dune"], ["Alien", "Dune"]),
]


@dataclass
class Outcome:
    """How one sequence ended: whether it matched, why not, and what the server did."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)


def _assign(phrases: tuple[str, ...], memories: list[dict[str, Any]], label: str) -> list[str]:
    problems: list[str] = []
    unmatched = list(memories)
    for phrase in phrases:
        hits = [m for m in unmatched if phrase.lower() in m["content"].lower()]
        if len(hits) != 1:
            problems.append(f"{label} {phrase!r} matched {len(hits)}")
            continue
        unmatched.remove(hits[0])
    problems += [f"unexpected {label} {m['content']!r}" for m in unmatched]
    return problems


async def run_sequence(client: Client, number: int, sequence: Sequence) -> Outcome:
    user = f"seq{number:03d}"
    actions: list[str] = []
    last: dict[str, Any] = {}
    for index, message in enumerate(sequence.messages):
        said = sequence.said[index] if sequence.said else OCCURRED_AT
        arguments: dict[str, Any] = {"message": message, "user_id": user, "occurred_at": said}
        if sequence.strategy is not None:
            arguments["resolution_strategy"] = sequence.strategy
        stored = await call_tool(client, "store_memory", arguments)
        actions += [memory["action"] for memory in stored["memories"]]
        if stored["memories"]:
            last = stored["memories"][-1]
    listed = await call_tool(client, "list_memories", {"user_id": user, "limit": 500, "include_inactive": True})
    memories = listed["memories"]
    problems = _assign(sequence.active, [m for m in memories if m["status"] == "active"], "active")
    problems += _assign(sequence.superseded, [m for m in memories if m["status"] == "superseded"], "superseded")
    if sequence.linked_to is not None:
        target = [m["memory_id"] for m in memories if sequence.linked_to.lower() in m["content"].lower()]
        if not set(target) & set(last.get("related_memory_ids", [])):
            problems.append(f"last memory not linked to {sequence.linked_to!r}")
    return Outcome(not problems, problems, actions)


async def evaluate(
    client: Client, name: str, sequences: list[Sequence], first: int, verbose: bool
) -> tuple[float, int]:
    """Run `sequences` (users numbered from `first`), print the table; return the overall share and violations."""
    per_kind: dict[str, Counter[str]] = defaultdict(Counter)
    violations = 0
    print(f"== {name}")
    for number, sequence in enumerate(sequences, start=first):
        outcome = await run_sequence(client, number, sequence)
        family = sequence.kind.split(":")[0]
        per_kind[family]["total"] += 1
        per_kind[family]["ok"] += outcome.ok
        bad_actions = {"superseded_previous", "updated", "merged"} & set(outcome.actions)
        if sequence.kind == "unrelated" and bad_actions:
            violations += 1
        if verbose or not outcome.ok:
            mark = "ok  " if outcome.ok else "FAIL"
            print(f"{mark} [{sequence.kind}] {' -> '.join(sequence.messages)}: {outcome.actions}")
            for problem in outcome.problems:
                print(f"       {problem}")
    total = sum(counter["total"] for counter in per_kind.values())
    ok = sum(counter["ok"] for counter in per_kind.values())
    print(f"{'kind':<12} {'sequences':>9} {'expected end state':>19}")
    for kind, counter in per_kind.items():
        print(f"{kind:<12} {counter['total']:>9} {counter['ok'] / counter['total']:>19.3f}")
    print(f"{'overall':<12} {total:>9} {ok / total:>19.3f}")
    print(f"unrelated memories superseded, updated or merged: {violations}")
    print()
    return ok / total, violations


async def _wait_for_meaning(client: Client) -> str:
    """Wait (up to 60 s) until the server's embedding model is ready, so every sequence is reconciled with the
    vector neighbours too (issue 9); returns the search mode that answered ("keyword" with no embedder)."""
    mode = "keyword"
    with anyio.move_on_after(60):
        while True:
            mode = (await call_tool(client, "search_memories", {"query": "ready", "user_id": "warmup"}))["mode"]
            if mode == "hybrid":
                break
            await anyio.sleep(0.1)
    return mode


async def main(verbose: bool, embedder: str) -> int:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        parameters = server_parameters(Path(folder) / "conflicts.db", {"HARMONIA_EMBEDDER": embedder})
        async with Client(parameters) as client:
            print(f"embedder {embedder}: searches answer in mode {await _wait_for_meaning(client)}")
            share, violations = await evaluate(client, "sequences", SEQUENCES, 0, verbose)
            held_share, held_violations = await evaluate(client, "held-out sequences", HELD_OUT, 1000, verbose)
            _, change_violations = await evaluate(client, "changes of mind (issue 10)", CHANGES_OF_MIND, 2000, verbose)
            _, held_change_violations = await evaluate(
                client, "changes of mind, held out (issue 10)", HELD_OUT_CHANGES, 3000, verbose
            )
            _, second_held_violations = await evaluate(
                client, "changes of mind as chatted (issue 9, ninth round)", HELD_OUT_CHANGES_2, 4000, verbose
            )
            _, third_held_violations = await evaluate(
                client, "changes of mind as chatted, held out (issue 9, ninth round)", HELD_OUT_CHANGES_3, 5000, verbose
            )
        elapsed = time.perf_counter() - started
    violations += change_violations + held_change_violations + second_held_violations + third_held_violations
    every = [*SEQUENCES, *HELD_OUT, *CHANGES_OF_MIND, *HELD_OUT_CHANGES, *HELD_OUT_CHANGES_2, *HELD_OUT_CHANGES_3]
    calls = sum(len(sequence.messages) for sequence in every)
    print(f"wall time: {elapsed:.1f} s for {calls} store_memory calls (one server process)")
    return 0 if share >= 0.9 and violations == 0 and held_violations == 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--verbose", action="store_true", help="print every sequence, not only the failures")
    parser.add_argument(
        "--embedder", default="embedded", help="HARMONIA_EMBEDDER for the server; none: candidates by words only"
    )
    arguments = parser.parse_args()
    sys.exit(anyio.run(main, arguments.verbose, arguments.embedder))

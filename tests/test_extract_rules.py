from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harmonia_mcp.extract import Extractor
from harmonia_mcp.extract.rules import RulesExtractor, extract_memories, third_person
from harmonia_mcp.models import Category, ExtractedMemory

pytestmark = pytest.mark.anyio

NY = ZoneInfo("America/New_York")
# Monday 2024-08-19 10:00 in New York.
REF = datetime(2024, 8, 19, 10, 0, tzinfo=NY)
FIRST_PERSON = re.compile(r"\b(?:i|i'm|me|my|mine|myself)\b", re.IGNORECASE)


def extract(message: str, speaker: str = "User") -> list[ExtractedMemory]:
    return extract_memories(message, speaker, REF)


def summary(message: str, speaker: str = "User") -> list[tuple[str, Category]]:
    return [(m.content, m.category) for m in extract(message, speaker)]


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NY)


def test_introduction_gives_three_memories() -> None:
    memories = extract(
        "My name is Jason Thompson. I work as a software engineer at AWS and I have a dog called Biggie."
    )
    assert [(m.content, m.category) for m in memories] == [
        ("User's name is Jason Thompson", Category.PERSONAL),
        ("User works as a software engineer at AWS", Category.WORK),
        ("User has a dog called Biggie", Category.RELATIONSHIP),
    ]
    assert [m.entities for m in memories] == [["Jason Thompson"], ["AWS"], ["Biggie"]]
    assert all(m.confidence == 0.9 for m in memories)
    assert all(m.event_time is None for m in memories)


@pytest.mark.parametrize(
    "message",
    [
        "Thanks!",
        "What's the weather like?",
        "ok",
        "Thanks, that's helpful!",
        "Can you help me write an email to my landlord?",
        "Hi there!",
        "lol",
        "Wow",
        "That's great",
        "Sounds good to me",
        "I think so.",
        "I'm fine, thanks",
        "Good morning!",
        "How do I reset my password?",
        "Please summarize this article.",
        "Do you know any good restaurants nearby",
        "Where is the nearest pharmacy",
        "You should try the new ramen place.",
        "Your essay was great.",
        "Tell me a joke about cats.",
        "I need you to rewrite this paragraph.",
        "",
        "   ",
    ],
)
def test_small_talk_questions_and_requests_give_nothing(message: str) -> None:
    assert extract(message) == []


def test_speaker_name_and_event_time_for_an_imported_turn() -> None:
    said_at = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    memories = extract_memories(
        "I went to a LGBTQ support group yesterday and it was so powerful.", "Caroline", said_at
    )
    assert len(memories) == 1
    memory = memories[0]
    assert memory.content.startswith("Caroline went to a LGBTQ support group")
    assert memory.event_time == datetime(2023, 5, 7, tzinfo=UTC)
    assert memory.event_time.isoformat()[:10] == "2023-05-07"
    assert "LGBTQ" in memory.entities


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "My brother Tom lives in Chicago and teaches history.",
            [("User's brother Tom lives in Chicago", Category.RELATIONSHIP), ("Tom teaches history", Category.FACT)],
        ),
        ("I'm allergic to shellfish.", [("User is allergic to shellfish", Category.HEALTH)]),
        ("I really enjoy baking bread.", [("User really enjoys baking bread", Category.PREFERENCE)]),
        ("I can't stand horror movies.", [("User can't stand horror movies", Category.PREFERENCE)]),
        ("I study chemistry at Stanford.", [("User studies chemistry at Stanford", Category.EDUCATION)]),
        ("I watch anime every weekend.", [("User watches anime every weekend", Category.FACT)]),
        (
            "I'm planning to run a half marathon in October.",
            [("User is planning to run a half marathon in October", Category.GOAL)],
        ),
        ("I'm fluent in French.", [("User is fluent in French", Category.SKILL)]),
        ("I feel anxious about my exams.", [("User feels anxious about their exams", Category.EMOTION)]),
        ("I was born in Toronto.", [("User was born in Toronto", Category.PERSONAL)]),
        (
            "I got promoted to senior manager last month.",
            [("User got promoted to senior manager in July 2024", Category.WORK)],
        ),
        ("I don't drink coffee anymore.", [("User doesn't drink coffee anymore", Category.PREFERENCE)]),
        ("I usually go to bed at 11pm.", [("User usually goes to bed at 11pm", Category.FACT)]),
        ("I'd like to learn Italian someday.", [("User would like to learn Italian someday", Category.GOAL)]),
        ("I've lived in Berlin since 2019.", [("User has lived in Berlin since 2019", Category.PERSONAL)]),
        (
            "I am a huge fan of jazz; I play the saxophone.",
            [("User is a huge fan of jazz", Category.PREFERENCE), ("User plays the saxophone", Category.SKILL)],
        ),
        (
            "i love my cat and i walk to work every day",
            [("User loves their cat", Category.RELATIONSHIP), ("User walks to work every day", Category.FACT)],
        ),
        (
            "I'm a nurse and love my job.",
            [("User is a nurse", Category.WORK), ("User loves their job", Category.WORK)],
        ),
        (
            "I graduated from Yale and moved to Boston in 2019.",
            [("User graduated from Yale", Category.EDUCATION), ("User moved to Boston in 2019", Category.PERSONAL)],
        ),
        ("My wife and I live in Boston.", [("User's wife and User live in Boston", Category.RELATIONSHIP)]),
        (
            "We're expecting a baby in March.",
            [("User and family are expecting a baby in March", Category.RELATIONSHIP)],
        ),
        ("Oh, and I also speak a little German.", [("User also speaks a little German", Category.SKILL)]),
        ("Remember that I'm lactose intolerant.", [("User is lactose intolerant", Category.HEALTH)]),
        (
            "Hey Sam! I just adopted a puppy named Mochi.",
            [("User just adopted a puppy named Mochi", Category.RELATIONSHIP)],
        ),
    ],
)
def test_statements(message: str, expected: list[tuple[str, Category]]) -> None:
    assert summary(message) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Hi, I'm Amara Okafor.", ["User's name is Amara Okafor"]),
        ("Hi! I'm Joaquin Araya, nice to meet you.", ["User's name is Joaquin Araya"]),
        ("Hey, Tomasz here.", ["User's name is Tomasz"]),
        ("Hello! I'm Sam. I have a dog.", ["User's name is Sam", "User has a dog"]),
        ("Please call me Jo.", ["User goes by Jo"]),
        ("My friends call me Jojo.", ["User goes by Jojo"]),
        # without a greeting, or not a name: what it said before
        ("I'm Chilean.", ["User is Chilean"]),
        ("Hi, I'm moving to Leeds.", ["User is moving to Leeds"]),
        ("Hi Caroline! I'm Melanie's sister.", ["User is Melanie's sister"]),
        ("Hi, I'm tired.", []),
        ("Call me tomorrow.", ["Call User on 2024-08-20"]),
    ],
)
def test_an_introduction_gives_the_speakers_name(message: str, expected: list[str]) -> None:
    assert [memory.content for memory in extract(message)] == expected


@pytest.mark.parametrize(
    ("message", "content"),
    [
        (
            "Big news: I accepted a job at the National Seismological Center.",
            "User accepted a job at the National Seismological Center",
        ),
        ("Quick update - we moved to Leeds.", "User and family moved to Leeds"),
        ("Exciting news! I got engaged to Sam.", "User got engaged to Sam"),
        ("Update: my sister had a baby.", "User's sister had a baby"),
        ("Good news, I passed my driving test.", "User passed their driving test"),
        # "news" that is the fact itself stays
        ("The news said it would rain.", "The news said it would rain"),
    ],
)
def test_an_announcement_before_the_fact_is_not_part_of_it(message: str, content: str) -> None:
    assert [memory.content for memory in extract(message)] == [content]


@pytest.mark.parametrize(
    ("message", "content", "category", "event_time"),
    [
        (
            "I have a job interview at Stripe on Thursday at 3pm.",
            "User has a job interview at Stripe on 2024-08-22 at 15:00",
            Category.EVENT,
            at(2024, 8, 22, 15),
        ),
        (
            "Remind me to renew my passport on September 3rd.",
            "User wants to be reminded to renew User's passport on 2024-09-03",
            Category.EVENT,
            at(2024, 9, 3),
        ),
        (
            "Could you remind me to water the plants tomorrow at 6pm?",
            "User wants to be reminded to water the plants on 2024-08-20 at 18:00",
            Category.EVENT,
            at(2024, 8, 20, 18),
        ),
        (
            "I'll be in Madrid next week for a conference.",
            "User will be in Madrid in the week of 2024-08-26 for a conference",
            Category.EVENT,
            at(2024, 8, 26),
        ),
        (
            "My son Leo started kindergarten yesterday.",
            "User's son Leo started kindergarten on 2024-08-18",
            Category.EDUCATION,
            at(2024, 8, 18),
        ),
        (
            "We bought a house in Austin three years ago.",
            "User and family bought a house in Austin on 2021-08-19",
            Category.EVENT,
            at(2021, 8, 19),
        ),
        (
            "My mom and I went hiking last Saturday.",
            "User's mom and User went hiking on 2024-08-17",
            Category.RELATIONSHIP,
            at(2024, 8, 17),
        ),
        (
            "I ran 5.5 miles this morning.",
            "User ran 5.5 miles on the morning of 2024-08-19",
            Category.EVENT,
            at(2024, 8, 19, 9),
        ),
    ],
)
def test_dated_statements(message: str, content: str, category: Category, event_time: datetime) -> None:
    memories = extract(message)
    assert len(memories) == 1
    assert (memories[0].content, memories[0].category, memories[0].event_time) == (content, category, event_time)


@pytest.mark.parametrize(
    ("message", "event_date"),
    [
        ("My dentist appointment moved to May 10.", "2026-05-10"),
        ("My exam was moved to April 20.", "2026-04-20"),
        ("The team meeting was moved to Wednesday.", "2026-03-04"),
        ("I signed up for the race on May 3.", "2026-05-03"),
    ],
)
def test_rescheduled_and_booked_events_are_upcoming_events(message: str, event_date: str) -> None:
    monday = datetime(2026, 3, 2, 10, 0, tzinfo=NY)
    memories = extract_memories(message, "User", monday)
    assert len(memories) == 1
    memory = memories[0]
    assert memory.event_time is not None
    assert (memory.event_time.date().isoformat(), memory.event_date_only) == (event_date, True)
    assert memory.category is Category.EVENT
    assert event_date in memory.content


@pytest.mark.parametrize(
    ("message", "category"),
    [
        # A job title decides work although its workplace is also a health or education cue.
        ("I'm a pediatric nurse at Santa Maria hospital.", Category.WORK),
        ("I work as a nurse at the city hospital.", Category.WORK),
        ("I'm an ER doctor at a big hospital.", Category.WORK),
        ("I'm a teacher at Lincoln High School.", Category.WORK),
        ("My job as a nurse at the hospital pays well.", Category.WORK),
        ("I'm a physical therapist.", Category.WORK),
        # Without a title, or with a health cue that is not the workplace, health and education stay.
        ("I was in the hospital for surgery.", Category.HEALTH),
        ("I'm a patient at the hospital.", Category.HEALTH),
        ("I'm a nurse with asthma.", Category.HEALTH),
        ("I'm a student at Boston University.", Category.EDUCATION),
        ("I'm a fan of the chef at the hospital.", Category.HEALTH),
        # Relationship still comes before work ("My husband is a chef" is about the husband).
        ("My sister is a nurse at the hospital.", Category.RELATIONSHIP),
    ],
)
def test_job_title_decides_work_over_its_workplace(message: str, category: Category) -> None:
    memories = extract(message)
    assert len(memories) == 1
    assert memories[0].category is category


def test_third_person_sentences_are_kept_with_low_confidence() -> None:
    memories = extract("Biggie hates the vacuum cleaner. The transgender stories were so inspiring!")
    assert [m.content for m in memories] == [
        "Biggie hates the vacuum cleaner",
        "The transgender stories were so inspiring",
    ]
    assert memories[0].category is Category.PREFERENCE
    assert all(m.confidence == 0.5 for m in memories)
    assert memories[0].entities == ["Biggie"]


def test_confidence_levels() -> None:
    strong, plain = extract("I'm allergic to peanuts. I usually wake up at 6am.")
    assert (strong.confidence, plain.confidence) == (0.9, 0.7)
    assert plain.event_time is None  # a time of day without a date is a habit, not an event


def test_sentence_splitting_keeps_abbreviations_and_decimals() -> None:
    memories = extract("Dr. Patel is my dentist. I see her every six months. I earn 3.5 times what I used to.")
    assert [m.content for m in memories] == [
        "Dr. Patel is User's dentist",
        "User sees her every six months",
        "User earns 3.5 times what User used to",
    ]


def test_mixed_message_keeps_only_the_facts() -> None:
    message = (
        "Thanks! By the way, I moved to Denver last month. What do you think about the city? Please keep it short."
    )
    memories = extract(message)
    assert [(m.content, m.category) for m in memories] == [("User moved to Denver in July 2024", Category.PERSONAL)]
    assert memories[0].event_time == at(2024, 7, 1)
    assert memories[0].event_date_only


def test_tags_name_the_cue() -> None:
    [dog] = extract("I have a dog called Biggie.")
    assert dog.tags == ["dog"]
    [reminder] = extract("Remind me to call the bank tomorrow.")
    assert reminder.tags == ["reminder"]


def test_curly_quotes_are_normalised() -> None:
    assert summary("I\u2019m allergic to cats\u2019 fur and I\u2019ve got asthma.") == [
        ("User is allergic to cats' fur", Category.HEALTH),
        ("User has got asthma", Category.HEALTH),
    ]


FIRST_PERSON_SENTENCES = [
    "My name is Ana and I live in Porto.",
    "I'm a teacher, but I'd rather be a painter.",
    "I've been to Japan twice and I'll go again next year.",
    "I'd been there before.",
    "Me and my partner are moving to Lisbon in 3 weeks.",
    "I taught myself to code.",
    "That laptop is mine and I love it.",
    "MY FAVORITE COLOR IS GREEN.",
    "i think my sister likes me more than my brother.",
    "We adopted two cats and our neighbours love them.",
    "Remind me to call my dad and ask him about me visiting.",
    "My friends and I went camping; we had fun and I took photos of myself.",
    "I, too, love pizza.",
    "I really, honestly don't know if I can make it to my cousin's wedding.",
    "Honestly, I never liked my old job.",
    "Our house is small but I like it.",
    "Anna told me that I'm her best friend.",
    "I'm not sure my boss knows I'm leaving.",
    "Just so you know, I'm gluten-free.",
    "My kids and I bake cookies every Sunday.",
    "I usually, i.e. most days, walk my dog at 7am.",
    "I love hiking, e.g. in the Alps, with my wife.",
]


@pytest.mark.parametrize("speaker", ["User", "Caroline"])
def test_no_first_person_word_remains(speaker: str) -> None:
    produced = 0
    for sentence in FIRST_PERSON_SENTENCES:
        for memory in extract(sentence, speaker):
            produced += 1
            assert not FIRST_PERSON.search(memory.content), (sentence, memory.content)
            assert memory.content[0].isupper()
            assert not memory.content.endswith((".", "!", "?", ","))
            assert not any(FIRST_PERSON.fullmatch(entity) for entity in memory.entities)
    assert produced >= len(FIRST_PERSON_SENTENCES)


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        # A negation or adverb between "I" and the verb is skipped; the verb after it is conjugated.
        ("I no longer work at TechCorp", "User no longer works at TechCorp"),
        ("I no longer live in Boston", "User no longer lives in Boston"),
        ("I never eat meat", "User never eats meat"),
        ("I hardly ever drink coffee", "User hardly ever drinks coffee"),
        ("I barely sleep", "User barely sleeps"),
        ("I not only cook dinner", "User not only cooks dinner"),
        ("I seldom drive", "User seldom drives"),
        ("I almost always walk to work", "User almost always walks to work"),
        ("I first met her in 2010", "User first met her in 2010"),
        ("I later moved to Rome", "User later moved to Rome"),
        ("I both love it", "User both loves it"),
        ("I either walk", "User either walks"),
        ("I kinda like it", "User kinda likes it"),
        # Auxiliaries and modals: "do" agrees, the rest stay as they are.
        ("I don't eat pork", "User doesn't eat pork"),
        ("I do not eat pork", "User does not eat pork"),
        ("I didn't go", "User didn't go"),
        ("I did not go", "User did not go"),
        ("I can't swim", "User can't swim"),
        ("I cannot swim", "User cannot swim"),
        ("I won't go", "User won't go"),
        ("I will not go", "User will not go"),
    ],
)
def test_words_between_i_and_the_verb_are_not_conjugated(sentence: str, expected: str) -> None:
    assert third_person(sentence, "User") == expected


def test_no_longer_sentence_is_rewritten_grammatically() -> None:
    assert summary("I no longer work at TechCorp.") == [("User no longer works at TechCorp", Category.WORK)]


def test_speaker_name_is_not_rewritten_again() -> None:
    assert summary("I love my dog.", speaker="Me") == [("Me loves Me's dog", Category.RELATIONSHIP)]


def test_long_message_is_fast() -> None:
    message = "I work at AWS and I have a dog called Biggie. What do you think? Thanks! " * 700  # about 50 KB
    started = time.perf_counter()
    memories = extract(message)
    assert time.perf_counter() - started < 5
    assert len(memories) == 1400


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=500))
def test_never_raises_on_arbitrary_text(text: str) -> None:
    for memory in extract_memories(text, "User", REF):
        assert memory.content
        assert not FIRST_PERSON.search(memory.content)


_WORDS = [
    "I",
    "i",
    "I'm",
    "I've",
    "I'd",
    "me",
    "my",
    "we",
    "our",
    "us",
    "US",
    "and",
    "but",
    ",",
    ";",
    ".",
    "?",
    "!",
    "Dr.",
    "a.m.",
    "e.g.",
    "remind",
    "remind me to",
    "you",
    "sister",
    "Maria",
    "lives",
    "works",
    "go",
    "usually",
    "tomorrow",
    "at 8",
    "99999999 days ago",
    "on Friday",
    "don't",
    "'",
    "\u2019",
    "\n",
    "é",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), max_size=25).map(" ".join))
def test_never_raises_on_sentence_like_text(text: str) -> None:
    for memory in extract_memories(text, "User", REF):
        assert memory.content
        assert not FIRST_PERSON.search(memory.content)


async def test_rules_extractor_implements_the_protocol() -> None:
    extractor: Extractor = RulesExtractor()
    assert extractor.name == "rules"
    memories = await extractor.extract(
        "I have a dentist appointment tomorrow at 2pm.", speaker="User", reference_time=REF
    )
    assert [(m.content, m.category, m.event_time) for m in memories] == [
        ("User has a dentist appointment on 2024-08-20 at 14:00", Category.EVENT, at(2024, 8, 20, 14))
    ]

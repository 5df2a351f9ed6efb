"""The embedded, deterministic extractor: no model, the same output for the same input.

Pipeline for one message:

1. Normalise: curly quotes and apostrophes become straight ones, "e.g."/"i.e." are
   spelled out (so they neither end a sentence nor read as the pronoun "i").
2. Split into sentences on . ! ? and newlines, but not after titles ("Dr."),
   initials ("J."), or "a.m."/"etc." followed by a lowercase word; decimals never split.
3. Per sentence: strip leading interjections ("Oh,", "Thanks,", "Wow") and
   memory instructions ("Remember that", "FYI"). "Remind me to X" becomes
   "{speaker} wants to be reminded to X". Questions (a final "?", or an opening
   like "what is", "can you", "do I") and requests ("please", "help me", an
   imperative first word) are dropped.
4. Split a sentence into clauses on "and" / "but" / ";" when both sides have a
   verb and the right side either has its own first-person subject ("I work at
   AWS and I have a dog") or starts with a verb whose subject is elided ("My
   sister Maria lives in Lisbon and works as a nurse": the subject is reused,
   and a possessive subject with a proper name reuses the name, "Maria works ...").
5. Per clause: drop it if it has no first person and speaks of "you" (it is about
   the other party), or if it has too few content words (small talk: fewer than
   two words outside stop words, interjections and evaluative words like
   "great"; one is enough for a first-person clause with a category cue: "I'm vegan").
6. Rewrite first person to third with `speaker`, in one regex pass so the
   speaker's name is never rewritten again: "I'm"→"S is", "I've"→"S has",
   "I'd"→"S would" (or "had" before a participle), "I'll"→"S will", "I" + a
   present-tense verb → "S" + its third-person form (skipping adverbs such as
   "usually"; past forms and modals unchanged; after "X and I" the verb stays
   plural), "my"/"mine"/"our"/"ours"→"S's", "me"/"myself"/"us"→"S", and "we" →
   "S and family" (keeps plural verbs grammatical: "S and family adopted a cat",
   "S and family are moving"). No first-person word is left in any content.
7. Category, first cue that matches, in this order:
   reminder → event; an event noun (appointment, meeting, flight, party, ...) with
   a resolved time today or later → event; emotion; health; education;
   relationship (family, friends, pets); work; goal; skill; preference; personal;
   any other clause with a resolved time → event; otherwise fact for a
   first-person clause and other for the rest. Emotion and health come early
   because they are the point of a sentence even when it mentions a person or a
   job; relationship comes before work so "My husband is a chef" is about the
   husband; the broad cues (preference "love", personal "from") come last.
   A job title ("I'm a pediatric nurse", "works as a teacher", "my job as a
   nurse") decides work over health and education cues that are its workplace
   (hospital, school, university) or part of the title ("physical therapist");
   any other health cue still wins ("I'm a nurse with asthma").
8. `event_time` from `temporal.resolve_time` on the clause as said, and the time words in the
   content replaced by the absolute date ("tomorrow at 2pm" → "on 2024-08-20 at 14:00");
   entities are runs of capitalised words (names, acronyms) minus pronouns,
   function words, weekday/month names and a clause-initial common word; tags are
   the matched cue word for noun-like categories (relationship, health,
   education, event) and "reminder" for reminders.

Confidence: 0.9 for a first-person clause with a category cue (and reminders),
0.7 for a first-person clause without one, 0.5 for a clause with no first person
("Biggie loves his stuffed Costco chicken"): those are kept because real
conversations carry facts that way, but they are the least certain.

Every regex is compiled once at import and none backtracks badly, so a message of
tens of KB is handled in linear time. No input string makes this module raise.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from harmonia_mcp.models import Category, ExtractedMemory
from harmonia_mcp.temporal import recurring_date, resolve_time, with_absolute_time

__all__ = ["RulesExtractor", "categorise", "extract_memories", "find_entities", "resolve_pronoun", "third_person"]

# ---------------------------------------------------------------------------
# Word lists
# ---------------------------------------------------------------------------

_VERB_BASES = frozenset(
    """
    work live have go love like enjoy hate prefer play study teach speak run walk cook eat drink read write watch
    take make get want need plan hope try start finish help visit travel move own drive ride swim sing dance paint
    draw volunteer practice practise learn use call text meet see know think feel buy sell build fix manage lead
    coach raise adopt rescue grow bake hike climb bike cycle skate knit sew blog share tell say ask spend save earn
    pay rent stay leave return come become turn celebrate graduate attend join quit retire marry miss wake sleep
    exercise lift meditate pray wear listen sit stand open close keep put bring send create develop collect mentor
    organize organise direct produce invest deliver serve prepare edit translate support struggle suffer recover
    believe remember forget understand give find lose win teach care spend hang cover care take walk jog surf
    own commute drink smoke vape wish dream wonder enjoy adore admire follow stream write post record film shoot
    photograph garden decorate clean wash shop order book schedule apply volunteer sponsor donate teach tutor
    switch change
    """.split()
)
# Present/past forms that are not "verb + s/ed".
_IRREGULAR_PAST = frozenset(
    """
    went had got saw made took came gave found knew thought told became left felt bought brought began kept held
    wrote stood heard meant met ran paid sat spoke led grew lost won wore drove ate drank fell flew forgot broke
    chose did was were sang swam taught caught fought sold sent spent built understood woke slept threw rode shook
    hid bit struck swore tore wept said dug fed fled froze hung lent lit rang rose sank shot slid sought spun stole
    stuck stung swung bent bled bred dealt dreamt learnt burnt spelt spilt knelt leapt stank strove wove withdrew
    overcame undertook forgave gotten been done gone seen taken given eaten read put cut set let hit quit hurt cost
    shut spread bet cast split burst
    """.split()
)
_MODALS = frozenset(
    """
    can could will would shall should may might must ought cannot can't couldn't won't wouldn't shouldn't mustn't
    didn't wasn't weren't mightn't needn't hadn't used
    """.split()
)
_BE_HAVE_DO = frozenset(
    """
    am is are was were be been being have has had do does did don't doesn't isn't aren't haven't hasn't
    i'm i've i'd i'll we're we've we'll we'd it's that's he's she's they're they've you're there's
    """.split()
)
_IRREGULAR_3SG = {
    "am": "is",
    "are": "is",
    "be": "is",
    "have": "has",
    "haven't": "hasn't",
    "do": "does",
    "don't": "doesn't",
    "aren't": "isn't",
    "ain't": "isn't",
    "go": "goes",
}
# Words that can follow "I" without being its verb ("my wife and I", "I too").
_NOT_VERBS = frozenset(
    """
    and or but of to in on at for with the a an as than so if who that which too myself me you nor then
    """.split()
)
# Verbs ending in -ly must not be skipped as adverbs.
_LY_VERBS = "apply|reply|rely|fly|supply|comply|imply|multiply|ally|rally|bully|tally"
# Words that sit between a subject and its verb ("I no longer work", "I seldom drive"): -ly adverbs, the
# closed class of frequency/time/focus adverbs without -ly, and negations, which are never the verb.
_ADVERB = (
    rf"(?:(?!(?:{_LY_VERBS})\b)[a-z]+ly|also|always|never|just|still|now|often|sometimes|even|already|ever|too|"
    r"mostly|kind\s+of|sort\s+of|kinda|sorta|once|again|finally|recently|only|absolutely|seldom|almost|first|"
    r"later|soon|then|both|either|rather|somehow|no\s+longer|not(?:\s+(?:only|just|even|yet|always|really))?)\b"
)
_ADVERB_WORD = re.compile(rf"^{_ADVERB}$", re.I)

_STOP = frozenset(
    """
    i me my mine myself we us our ours ourselves you your yours yourself he him his she her hers it its they them
    their theirs this that these those there here the a an and or but so if then than as at by for from in into of
    on onto to with about up down out over under too very really just also still even quite pretty much many more
    most some any all no not nor only own same such both each few other another am is are was were be been being
    have has had having do does did doing will would shall should can could may might must i'm i've i'd i'll it's
    that's there's what's let's he's she's we're they're you're don't doesn't didn't isn't aren't wasn't weren't
    can't won't wouldn't couldn't shouldn't haven't hasn't hadn't im ive dont thats whats what which who whom whose
    when where why how because while though although again ever never always now well get got gets getting thing
    things stuff something anything everything nothing lot lots way kind sort bit one ones yes yeah yep no nope ok
    okay oh ah aw wow lol lmao haha hahaha hmm um uh hey hi hello thanks thank thx please sure right great good
    nice cool awesome amazing wonderful fantastic interesting helpful fine true perfect lovely sweet glad totally
    definitely absolutely exactly indeed agree think guess suppose mean know see bet sounds sound seems seem like
    idea news point question cute funny fun sense makes make worries worry problem luck back today tonight tomorrow
    yesterday morning afternoon evening night day week soon later time actually honestly literally basically
    probably maybe anyway anyways btw omg doubt doubts ugh meh phew yay argh sigh sadly unfortunately
    """.split()
)
_TEMPORAL_WORDS = frozenset(
    """
    monday tuesday wednesday thursday friday saturday sunday january february march april may june july august
    september october november december today tomorrow tonight yesterday am pm
    """.split()
)
_LANGUAGES = (
    "english|spanish|french|german|italian|portuguese|japanese|chinese|mandarin|cantonese|korean|arabic|hindi|"
    "russian|dutch|swedish|norwegian|danish|finnish|polish|greek|turkish|hebrew|vietnamese|thai|indonesian|"
    "tagalog|swahili|urdu|bengali|punjabi|persian|farsi|ukrainian|czech|hungarian|romanian|catalan|basque|irish|"
    "welsh|latin|esperanto|sign language|asl"
)
_INSTRUMENTS = (
    "guitar|piano|violin|viola|drums|cello|bass|ukulele|flute|saxophone|sax|trumpet|trombone|harp|clarinet|banjo|"
    "keyboard|keys|organ|accordion|harmonica|mandolin"
)


def _third_singular(verb: str) -> str:
    """'work' → 'works', 'study' → 'studies', 'watch' → 'watches'; past forms and modals unchanged."""
    low = verb.lower()
    if low in _IRREGULAR_3SG:
        return _IRREGULAR_3SG[low]
    if (
        low in _MODALS
        or low in _IRREGULAR_PAST
        or low in _NOT_VERBS
        or low in ("was", "were", "is", "has", "does")
        or "'" in low
        or (low.endswith("ed") and not low.endswith("eed"))
        or len(low) < 2
        or not low.isalpha()
    ):
        return verb
    if low.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if low.endswith("y") and low[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def _verb_forms() -> frozenset[str]:
    forms: set[str] = set(_IRREGULAR_PAST) | set(_MODALS) | set(_BE_HAVE_DO)
    for base in _VERB_BASES:
        forms.add(base)
        forms.add(_third_singular(base))
        if base.endswith("e"):
            forms.add(base + "d")
        elif base.endswith("y") and base[-2] not in "aeiou":
            forms.add(base[:-1] + "ied")
        else:
            forms.add(base + "ed")
            forms.add(base + base[-1] + "ed")  # planned, stopped
    return frozenset(forms)


_VERB_FORMS = _verb_forms()
_PRONOUNS = frozenset("i we he she they it you".split())
_PARTICIPLES = frozenset("been done gone seen taken given eaten gotten written driven grown known shown".split())
_DETERMINERS = frozenset("my your his her its our their the a an this that these those some any every each".split())

# ---------------------------------------------------------------------------
# Regexes
# ---------------------------------------------------------------------------

_QUOTES = str.maketrans(
    {
        "\u2019": "'",
        "\u2018": "'",
        "\u02bc": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": " - ",
        "\u2026": "...",
        "\u00a0": " ",
    }
)
_ABBREV_FIX = re.compile(r"\b(?:(?P<eg>e\.g\.)|(?P<ie>i\.e\.))", re.I)
_SPACES = re.compile(r"[ \t\r\f\v]+")
_SENTENCE_END = re.compile(r"(?P<p>[.!?]+)[\"')\]]*(?=\s|$)|\n+")
_LAST_TOKEN = re.compile(r"(\S+)$")
_NEXT_CHAR = re.compile(r"\s*(\S)")
_TITLES = frozenset("dr mr mrs ms prof st sr jr mt rev gen capt lt col sgt fr vs no".split())
_SOFT_ABBREV = frozenset("a.m p.m etc approx incl ca".split())

_LEADING_NOISE = re.compile(
    r"^(?:(?:oh+|ah+|aw+|wow+|yeah|yep|yup|ok|okay|agreed|congrats|congratulations|sorry|hey|hi|hello|haha\w*|lol|lmao|hmm+|um+|uh+|thanks|thank\s+you|thx|"
    r"omg|btw|fyi|anyway|anyways|so|and|but|also|plus|ugh+|meh|phew|yay|argh+|sigh|ooh+|welp|"
    r"actually|honestly|sadly|unfortunately|luckily|fortunately|basically|(?:it\s+)?turns\s+out(?:\s+that)?)\b[\s,!.:;-]*"
    r"|(?:well|yes|no|sure|right|great|nice|cool|awesome|actually|honestly|by\s+the\s+way|just\s+so\s+you\s+know|"
    r"for\s+the\s+record|guess\s+what|fun\s+fact|oh\s+my\s+god|"
    # "Big news:", "Quick update -": an announcement of the fact, not part of it
    r"(?:(?:big|good|great|bad|sad|exciting|amazing|huge|happy|some|quick|small|little)\s+)?(?:news|update))"
    r"\s*[,!:;.-]+\s*"
    r"|(?:please\s+)?(?:remember|note|keep\s+in\s+mind|don't\s+forget|never\s+forget)"
    r"(?:\s+that\b|\s*:|(?=\s+(?:i|i'm|i've|my|we|our)\b))\s*)+",
    re.I,
)
# "Hey Mel!", "Thanks, Caroline!": a greeting and the name it addresses.
_GREETING = re.compile(
    r"^(?i:hey|hi|hiya|hello|yo|dear|thanks|thank\s+you|congrats|congratulations|wow|oh|aw+)"
    r"(?:[\s,]+(?:[A-Z][\w'-]*|(?i:there|guys|everyone|all)))?\s*[,!.:;-]+\s*"
)
# An introduction after a greeting: "Hi, I'm Amara Okafor.", "Hello! I'm Joaquin, nice to meet you.", "Hey, Tomasz
# here." Without the greeting "I'm Chilean" reads the same, so a bare "I'm <Capitalised>" stays "User is ...".
_INTRODUCTION = re.compile(
    r"^(?:(?:i'm|i\s+am)\s+(?P<name>[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*){0,2})"
    r"|(?P<here>[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)?)\s+here)"
    r"(?:\s*[,;-]\s*(?:(?:it's\s+)?(?:nice|good|great|lovely)\s+to\s+meet\s+you|by\s+the\s+way))?\s*$",
    re.I,
)
_CAPITALISED = re.compile(r"^[A-Z]")
# "Call me Jo", "Please call me Jo", "Everyone calls me Jojo": what the speaker goes by (a name in capitals; "call me
# tomorrow" is a request).
_CALL_ME = re.compile(
    r"^(?:(?:please|you\s+can|just|everyone|everybody|people|most\s+people|my\s+friends|friends)\s+)?"
    r"(?:call|calls)\s+me\s+(?P<name>[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)?)(?:\s+for\s+short)?\s*$",
    re.I,
)
# Chat often drops "I'm": "Gonna continue my studies", "Planning to visit Rome".
_PROSPECTIVE_START = re.compile(
    r"^(?P<w>gonna|going\s+to|planning\s+(?:to|on)|hoping\s+to|trying\s+to|thinking\s+(?:about|of)|"
    r"looking\s+forward\s+to|heading\s+(?:to|out)|off\s+to)\b",
    re.I,
)
_REMINDER = re.compile(
    r"^(?:(?:please|pls|hey|ok|okay)[\s,]+)?(?:(?:can|could|would|will)\s+you\s+)?(?:please\s+)?"
    r"(?:remind\s+me|set\s+(?:up\s+)?a\s+reminder(?:\s+for\s+me)?)\s+(?P<kind>to|that|about|of|for)\s+(?P<what>.+)$",
    re.I | re.S,
)
_WORDS = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")
_AUX_START = frozenset(
    """
    do does did are is was were can could would will should shall have has had may might must am isn't aren't
    don't doesn't didn't can't won't wouldn't shouldn't couldn't haven't hasn't wasn't weren't
    """.split()
)
_SUBJECT_AFTER_AUX = frozenset(
    """
    i you he she it we they my your his her its our their the a an this that these those there anyone anybody
    someone somebody everyone any u ya y'all
    """.split()
)
_WH = frozenset("what how why when where who whom whose which".split())
_WH_FOLLOW = _AUX_START | frozenset("about many much long often far come else kind time do".split())
_WH_CONTRACTED = re.compile(r"^(?:what|how|where|who|when|why)(?:'s|'re|'d|'ll|s)$")
_IMPERATIVES = frozenset(
    """
    please help tell show give write explain find make let let's lets list summarize summarise translate describe
    suggest recommend check create send draft generate compose fix rewrite edit correct search look calculate
    compare book schedule add update delete remove provide share proofread brainstorm imagine pretend act continue
    consider convert format answer ignore stop define take keep enjoy get stay hang be don't
    """.split()
)
_REQUEST = re.compile(
    r"\b(?:help\s+me|(?:can|could|would|will)\s+you|need\s+(?:your\s+|some\s+)?help|(?:need|want|like|love)\s+you\s+to|"
    r"wondering\s+if|if\s+you\s+could|let\s+me\s+know|tell\s+me|please|i\s+wonder)\b",
    re.I,
)
_FIRST_PERSON = re.compile(r"\b(?:[Ii]|[Mm][Ee]|[Mm][Yy]|[Mm]ine|[Mm]yself|[Ww]e|[Oo]urs?|[Oo]urselves|us|Us)\b")
_YOU = re.compile(r"\b(?:you|your|you're|yours|yourself|yourselves|y'all)\b|(?<![\w-])(?-i:u|ur)(?![\w-])", re.I)
_CONNECTOR = re.compile(
    r"\s*(?:,\s*(?:and|but)\b|;\s*(?:and\b|but\b)?|\s(?:and|but)\b|,(?=\s*(?:i|i'm|i've|i'll|we|we're|we've)\s))\s*",
    re.I,
)
# Fillers inside or at the end of a clause ("... cats, sadly", "..., after all"): they say how the speaker
# feels about the fact, not the fact. Leading ones are in _LEADING_NOISE.
_FILLER = re.compile(
    r",?\s+(?:sadly|unfortunately|luckily|honestly|lol|lmao|haha\w*|tbh|btw|i\s+guess|after\s+all|though)"
    r"(?=\s*(?:,|$))",
    re.I,
)
# A clause that only announces a change ("I switched jobs", "I changed my mind"); the clause after it says
# what changed, and gets "now" so reconciliation reads it as a change (conflicts.py).
_ANNOUNCEMENT = re.compile(
    r"^(?:i|we)\s+(?:(?:just|recently|finally)\s+)?(?:switched|changed)\s+(?:jobs|careers|teams|companies|"
    r"my\s+mind|our\s+minds)(?:\s+about\s+\w+)?$|^(?:i|we)\s+(?:have|got)\s+(?:some\s+)?(?:news|an\s+update)$",
    re.I,
)
_NOW_AFTER_SUBJECT = re.compile(r"^(?P<s>i'm|i\s+am|we're|i|we)\s+(?!now\b)", re.I)
_CHANGE_WORD = re.compile(r"\b(?:now|anymore|any\s+more|no\s+longer|instead|these\s+days)\b", re.I)
# Mood of the moment ("I'm exhausted today"): not a durable fact.
_MOMENT = re.compile(
    r"\b(?:today|tonight|right\s+now|at\s+the\s+moment|this\s+(?:morning|afternoon|evening)|long\s+day|"
    r"rough\s+day|long\s+week)\b",
    re.I,
)
_WORKS = re.compile(r"\b(?:work(?:s|ed|ing)?|teach(?:es|ing)?|taught|runs|owns|manages)\b")
# A feeling with what it is about ("proud of my team today") says something lasting; a bare one does not.
_FEELING_ABOUT = re.compile(r"\b(?:of|about|because|that|for|with|since|by)\s+\w", re.I)
# "I'm Priya Raman", "My name's Leo": a name is personal.
_NAME_INTRO = re.compile(
    r"^(?i:i'm|i\s+am|my\s+name's|my\s+name\s+is|call\s+me)\s+[A-Z][a-z'-]+(?:\s+[A-Z][a-z'-]+){0,2}(?:\s*[,;].*)?$"
)
# Running a business is work ("I run a small bakery", "We own a café"), whatever it sells.
_BUSINESS = re.compile(
    r"\b(?:run|runs|running|ran|own|owns|opened|open|started|founded|manage|manages)\s+(?:a|an|my|our|the|his|her|"
    r"their)\s+(?:[\w'-]+\s+){0,3}(?:business|bakery|shop|store|restaurant|caf[eé]|cafe|company|firm|agency|studio|"
    r"salon|clinic|practice|farm|bar|pub|startup|start-up|boutique|brewery|bookshop|bookstore|food\s+truck)\b",
    re.I,
)
# A relative or partner as the subject ("My partner Sam works night shifts"): their job is about them.
_RELATION_SUBJECT = re.compile(
    r"^(?:my|our)\s+(?:[\w'-]+\s+)?(?:sisters?|brothers?|mom|mum|mother|dad|father|parents?|husband|wife|partner|"
    r"boyfriend|girlfriend|fianc[eé]e?|spouse|sons?|daughters?|kids?|children|aunt|uncle|cousins?|niece|nephew|"
    r"grand(?:ma|pa|mother|father)|friends?|roommates?|best\s+friend)\b",
    re.I,
)
_OWN_SUBJECT = re.compile(r"^(?:i|i'm|i've|i'd|i'll|we|we're|we've|we'd|we'll|my\s+\w+|our\s+\w+)\b", re.I)
# A verb directly followed by a word: "and support, amazing" is a list, not a clause.
_VERB_AND_WORD = re.compile(rf"^\s*(?:{_ADVERB}\s+)*[A-Za-z']+\s+[A-Za-z0-9]", re.I)
_TRAILING = re.compile(r"[\s.!?,;:\"'()\[\]-]+$")
_LEADING = re.compile(r"^[\s,;:\"'()\[\]*\u2022>-]+")

_PRONOUN = re.compile(
    r"(?P<icontr>\bi'(?P<ic>m|ve|ll|d)\b)"
    r"|(?P<wecontr>\bwe'(?P<wc>re|ve|ll|d)\b)"
    rf"|(?P<i>\bi\b)(?P<adv>(?:,?\s+{_ADVERB})*,?)(?:\s+(?!(?:i|me|my|mine|myself|we|us|our|ours)\b)(?P<verb>(?-i:[a-z]+(?:n't)?))\b(?!'))?"
    r"|(?P<we>\bwe\b)"
    r"|(?P<poss>\b(?:my|mine|our|ours)\b)"
    r"|(?P<obj>\b(?:myself|ourselves|me|us)\b)",
    re.I,
)
_HAD_PARTICIPLE = re.compile(
    r"\s+(?:been|gone|done|had|seen|got|gotten|taken|made|left|told|forgotten|known|heard|lived|worked)\b", re.I
)
_PLURAL_BEFORE = re.compile(r"(?:\band|&|\bor)\s*$", re.I)

_ENTITY = re.compile(r"\b[A-Z][A-Za-z0-9'&+.-]*(?:\s+[A-Z][A-Za-z0-9'&+-]*)*")


def _cue(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.I)


_EVENT_NOUN = _cue(
    r"\b(?:remind\w*|appointments?|meetings?|meetup|flights?|party|wedding|concert|interview|exam|trip|vacation|"
    r"holiday|conference|game|dinner|lunch|brunch|reservation|surgery|deadline|presentation|ceremony|graduation|"
    r"funeral|show|performance|recital|gig|festival|check-?up|visit|call|event|birthday|anniversary|lesson|"
    r"session|leav(?:e|es|ing)|arriv(?:e|es|ing)|due|date\s+night|hearing|screening|webinar|class)\b"
)
_EMOTION = _cue(
    r"\b(?:feel|feels|feeling|felt|stress|stressed|stressful|anxious|anxiety|happy|happier|sad|excited|worried|"
    r"grateful|thankful|proud|upset|angry|mad|frustrated|nervous|scared|afraid|lonely|depressed|overwhelmed|"
    r"thrilled|relieved|disappointed|heartbroken|exhausted|burn(?:ed|t)\s+out|ecstatic|hopeful|jealous|ashamed|"
    r"embarrassed|bored|inspired|motivated|devastated|miserable|joyful|blessed|terrified|furious|homesick|"
    r"emotional|moved\s+by|touched\s+by)\b"
)
_HEALTH = _cue(
    r"\b(?:allerg(?:y|ies|ic)|diagnos(?:ed|is)|diabet(?:es|ic)|asthma|cancer|medications?|medicine|meds|illness|"
    r"injur(?:y|ies|ed)|sick|therap(?:y|ist)|surgery|blood\s+pressure|cholesterol|migraines?|chronic\s+pain|"
    r"back\s+pain|arthritis|adhd|autis(?:m|tic)|depression|insomnia|pregnan(?:t|cy)|vaccin\w*|covid|flu|fever|"
    r"hospital\w*|physio\w*|disorder|disease|symptoms?|prescri\w+|doctor's|(?:see|saw|seeing|visit|visited)\s+"
    r"(?:a|the|my)\s+(?:doctor|dentist|physician|specialist)|my\s+doctor|gluten|lactose|intolerant|celiac|"
    r"coeliac|sprained|concussion|diet|blood\s+type|high\s+blood|recovering\s+from|rehab|sober|sobriety|"
    r"smok(?:e|es|ed|er|ers|ing)|vap(?:e|es|ed|ing))\b"
)
_EDUCATION = _cue(
    r"\b(?:graduat(?:ed|e|es|ing|ion)|degree|diploma|university|college|school|studied|studying|study|studies|"
    r"major(?:ed|ing)?\s+in|minor(?:ed)?\s+in|phd|ph\.d|master's|masters|bachelor(?:'s)?|mba|thesis|dissertation|"
    r"semester|campus|professor|courses?|classes|tuition|scholarship|alumn\w+|enrolled|student|exams?|gpa|"
    r"homework|kindergarten|grad\s+school|lecture|freshman|sophomore|junior\s+year|senior\s+year)\b"
)
_RELATIONSHIP = _cue(
    r"\b(?:sisters?|brothers?|siblings?|mom|moms|mum|mother|dad|father|parents?|husband|wife|partner|boyfriend|"
    r"girlfriend|fianc[eé]e?|spouse|sons?|daughters?|kids?|child|children|baby|babies|grand(?:ma|pa|mother|father|"
    r"parents?|son|daughter|kids?|children)|aunt|uncle|cousins?|niece|nephew|friends?|bff|roommates?|neighbou?rs?|"
    r"family|in-laws?|stepmom|stepdad|stepson|stepdaughter|dogs?|cats?|pets?|pupp(?:y|ies)|kittens?|hamsters?|"
    r"parrots?|rabbits?|bunn(?:y|ies)|horses?|guinea\s+pigs?|married|engaged|divorced|dating|widow(?:ed|er)?|"
    r"twins?|mentor|anniversary)\b"
)
_JOB_NOUNS = (
    r"manager|engineer|developer|programmer|designer|nurse|teacher|chef|doctor|lawyer|attorney|"
    r"accountant|consultant|analyst|architect|scientist|researcher|firefighter|police\s+officer|pilot|electrician|"
    r"plumber|mechanic|pharmacist|veterinarian|barista|cashier|waiter|waitress|realtor|freelancer|entrepreneur|"
    r"founder|ceo|cto|cfo|intern"
)
_WORK = _cue(
    r"\b(?:work(?:s|ed|ing)?\s+(?:as|at|for|in(?!\s+progress)|with|from|on|remotely|part-time|full-time|freelance|"
    r"nights|shifts)|"
    r"jobs?|career|profession|occupation|employer|employed|employee|(?<!'s\s)company|startup|start-up|office|colleagues?|"
    rf"co-?workers?|boss|{_JOB_NOUNS}|internship|hired|promoted|promotion|fired|laid\s+off|salary|clients?|"
    r"business|team\s+lead|tech\s+lead|retired|retirement|coworking|paycheck|workplace|interview)\b"
)
# A job title: "I'm a pediatric nurse", "works as a teacher", "my job as a nurse". It decides work over
# the health or education cues of its workplace ("... at Santa Maria hospital", "... at Lincoln High School")
# and of the title itself ("physical therapist"). The extra nouns are jobs that are also health or
# education cues, so they are not work cues on their own ("my therapist", "my professor").
_JOB_TITLE = _cue(
    r"(?:\bi'm|\bi\s+am|\bi\s+was|\bis|\bwas|\bwork(?:s|ed|ing)?\s+as|\bemployed\s+as|"
    r"\b(?:job|career|position|role)s?\s+as)\s+an?\s+"
    r"(?:(?!(?:of|at|in|for|with|from|and|or|but|the|a|an|to|on|who|that)\b)[a-z'-]+\s+){0,3}?"
    rf"(?:{_JOB_NOUNS}|therapist|surgeon|dentist|physician|paramedic|midwife|pediatrician|psychologist|"
    r"psychiatrist|radiologist|professor|lecturer|tutor|librarian|receptionist|technician|caregiver|"
    r"social\s+worker)\b"
)
# Places of work that are also health or education cues; with a job title they are where the job is.
_WORKPLACE = _cue(r"hospital\w*|clinic|school|high\s+school|grad\s+school|university|college|campus|kindergarten")
_GOAL = _cue(
    r"\b(?:goals?|plan(?:s|ning)?\s+(?:to|on)|want(?:s|ed)?\s+to|wanna|hop(?:e|es|ing)\s+to|training\s+for|"
    r"train(?:s)?\s+for|aim(?:s|ing)?\s+to|dream(?:s|ing)?\s+(?:of|is|to|about)|intend(?:s|ing)?\s+to|"
    r"(?:would|'d)\s+(?:like|love)\s+to|trying\s+to|try\s+to|resolution|saving\s+(?:up\s+)?for|"
    r"working\s+(?:toward|towards)|bucket\s+list|determined\s+to|aspir\w+|ambition|"
    rf"(?:going\s+to|gonna)\s+(?:{'|'.join(sorted(_VERB_BASES))})|someday|one\s+day\s+i)\b"
)
_SKILL = _cue(
    rf"\b(?:speak(?:s|ing)?\s+(?:(?:a\s+little|some|basic|fluent|conversational|good)\s+)?(?:{_LANGUAGES})|"
    r"fluent(?:ly)?|bilingual|trilingual|multilingual|learn(?:ing|ed|t|s)?|good\s+at|great\s+at|skilled|"
    r"proficient|expert\s+(?:in|at)|know(?:s)?\s+how\s+to|self-taught|taught\s+(?:myself|himself|herself)|"
    rf"play(?:s|ing|ed)?\s+(?:the\s+)?(?:{_INSTRUMENTS})|play(?:s|ing|ed)?\s+\w+\s+for\s+\w+\s+years|"
    r"can\s+(?:play|speak|code|cook|swim|draw|paint|sing|dance|program|knit|sew|drive|ski|surf|juggle)|"
    r"certified|years\s+of\s+experience|black\s+belt)\b"
)
_PREFERENCE = _cue(
    r"\b(?:lov(?:e|es|ed|ing)|(?:i|we|they|he|she|really|also|totally|don't|doesn't|didn't|do|does|not|would|"
    r"'d)\s+(?:really\s+)?lik(?:e|es|ed)|\w+\s+likes|hat(?:e|es|ed)|prefer(?:s|red)?|favou?rites?|"
    r"enjoy(?:s|ed|ing)?|dislik(?:e|es|ed)|can't\s+stand|cannot\s+stand|(?:don't|doesn't|never|do\s+not|"
    r"does\s+not|won't|can't)\s+(?:eat|drink)|vegetarian|vegan|pescatarian|fan\s+of|big\s+fan|obsessed\s+with|"
    r"(?:i'm|am|is|are)\s+(?:really\s+|so\s+)?into|passionate|addicted\s+to|crav(?:e|es|ing)|"
    r"can't\s+live\s+without|ador(?:e|es|ed)|fond\s+of|allergic)\b"
)
_PERSONAL = _cue(
    r"\b(?:name\s+is|names\s+are|call\s+me|liv(?:e|es|ed|ing)\s+in|born|years?\s+old|mov(?:ed|ing)\s+(?:to|from|here|"
    r"back)|relocat\w+|(?:am|is|'m|are|come|comes|originally)\s+from|grew\s+up|hometown|driv(?:e|es|ing)\s+an?|"
    r"own(?:s)?\s+an?|birthday|i'm\s+\d{1,3}\b|i\s+am\s+\d{1,3}\b|citizen|nationality|apartment|"
    r"neighbou?rhood|identify\s+as|pronouns|transgender|trans\s+(?:woman|man)|non-binary|gay|lesbian|bisexual|"
    r"queer|religio\w+|christian|muslim|jewish|buddhist|hindu|atheist|introvert|extrovert|left-handed)\b"
)
_ORDERED_CUES: tuple[tuple[Category, re.Pattern[str]], ...] = (
    (Category.EMOTION, _EMOTION),
    (Category.HEALTH, _HEALTH),
    (Category.EDUCATION, _EDUCATION),
    (Category.RELATIONSHIP, _RELATIONSHIP),
    (Category.WORK, _WORK),
    (Category.GOAL, _GOAL),
    (Category.SKILL, _SKILL),
    (Category.PREFERENCE, _PREFERENCE),
    (Category.PERSONAL, _PERSONAL),
)
_TAGGED = frozenset({Category.RELATIONSHIP, Category.HEALTH, Category.EDUCATION, Category.EVENT})

_STRONG, _PLAIN, _THIRD_PERSON = 0.9, 0.7, 0.5

# ---------------------------------------------------------------------------
# Sentences and clauses
# ---------------------------------------------------------------------------


def _normalise(message: str) -> str:
    text = message.translate(_QUOTES)
    text = _ABBREV_FIX.sub(lambda m: "for example" if m["eg"] else "that is", text)
    return _SPACES.sub(" ", text)


def _sentences(text: str) -> Iterator[tuple[str, str]]:
    """Yield (sentence, terminal punctuation) pairs."""
    start = 0
    for m in _SENTENCE_END.finditer(text):
        punct = m["p"] or ""
        if punct == ".":
            token_match = _LAST_TOKEN.search(text, max(start, m.start() - 40), m.start())
            token = token_match.group(1).lower().lstrip("(\"'") if token_match else ""
            following = _NEXT_CHAR.match(text, m.end())
            next_is_lower = following is not None and following.group(1).islower()
            if (
                token in _TITLES
                or (len(token) == 1 and token != "i" and token_match is not None and token_match.group(1).isupper())
                or (token in _SOFT_ABBREV and (following is None or next_is_lower))
            ):
                continue
        yield text[start : m.start()], punct
        start = m.end()
    if start < len(text):
        yield text[start:], ""


def _lower_words(text: str) -> list[str]:
    return [w.lower() for w in _WORDS.findall(text)]


def _is_question(sentence: str) -> bool:
    words = _lower_words(sentence)
    if not words:
        return False
    first, second = words[0], words[1] if len(words) > 1 else ""
    if first in _AUX_START and second in _SUBJECT_AFTER_AUX:
        return True
    if _WH_CONTRACTED.match(first):
        return True
    if first in _WH and (second in _WH_FOLLOW or not second):
        return True
    return first in ("any", "anyone", "anybody") and second in ("idea", "ideas", "tips", "suggestions", "thoughts")


def _is_request(sentence: str) -> bool:
    words = _lower_words(sentence)
    if words and words[0] in _IMPERATIVES:
        return True
    return _REQUEST.search(sentence) is not None


def _is_verb_at(words: list[str], index: int) -> bool:
    word = words[index]
    if word not in _VERB_FORMS and not word.endswith("n't"):
        return False
    return index == 0 or words[index - 1] not in _DETERMINERS


def _has_verb(text: str) -> bool:
    words = _lower_words(text)
    return any(_is_verb_at(words, i) for i in range(len(words)))


def _elided_subject(clause: str) -> str | None:
    """The subject to reuse for "... and works as a nurse": the words before the clause's first verb."""
    tokens = list(_WORDS.finditer(clause))
    words = [t.group(0).lower() for t in tokens]
    for index in range(len(words)):
        if _is_verb_at(words, index):
            if index == 0:
                # "I'm a nurse and love my job": the contraction holds the subject.
                head = tokens[0].group(0).split("'")[0]
                return head if "'" in words[0] and head.lower() in _PRONOUNS else None
            kept = [t.group(0) for t in tokens[:index]]
            while kept and _ADVERB_WORD.match(kept[-1]):
                kept.pop()
            # Only a short noun phrase or a lone pronoun is a subject; "We roast marshmallows" is not.
            if not kept or len(kept) > 4 or (len(kept) > 1 and kept[0].lower() in _PRONOUNS):
                return None
            if kept[0].lower() in ("my", "our"):
                names: list[str] = []
                for word in reversed(kept[1:]):
                    if not word[0].isupper():
                        break
                    names.insert(0, word)
                if names:
                    return " ".join(names)
            return clause[: tokens[len(kept) - 1].end()].strip()
    return None


def _verb_class(word: str) -> str:
    """'past', '3sg' or 'base' (which includes modals and "am"), to check that joined verbs agree."""
    if (
        word in _IRREGULAR_PAST
        or word in ("was", "were", "had", "did", "didn't", "wasn't", "weren't", "hadn't")
        or (word.endswith("ed") and not word.endswith("eed"))
    ):
        return "past"
    if (
        word in ("is", "has", "does", "doesn't", "isn't", "hasn't")
        or word.endswith("'s")
        or (
            word.endswith("s")
            and (word[:-1] in _VERB_BASES or word[:-2] in _VERB_BASES or word[:-3] + "y" in _VERB_BASES)
        )
    ):
        return "3sg"
    return "base"


def _first_verb(text: str) -> str | None:
    words = _lower_words(text)
    return next((words[i] for i in range(len(words)) if _is_verb_at(words, i)), None)


def _starts_with_elided_verb(part: str, previous_verb: str) -> bool:
    """True for "works as a nurse" after "My sister lives in Lisbon": a verb agreeing with `previous_verb`."""
    words = _lower_words(part)
    index = 0
    while index < len(words) and _ADVERB_WORD.match(words[index]):
        index += 1
    # A verb needs a word right after it, so "faith and hope" and "love and support, amazing" are not split.
    if index >= len(words) - 1 or not _VERB_AND_WORD.match(part):
        return False
    word = words[index]
    if _verb_class(word) != _verb_class(previous_verb):
        return False
    # "it's", "i'm": a contraction carries its own subject, which _OWN_SUBJECT handles; a bare participle
    # ("... has made me feel accepted and given me courage") needs the auxiliary, so it is not split off.
    return word in _VERB_FORMS and word not in _PARTICIPLES and ("'" not in word or word.endswith("n't"))


@dataclass
class _Clause:
    text: str
    first_person: bool


def _clauses(sentence: str) -> list[_Clause]:
    pieces: list[str] = []
    connectors: list[str] = []
    start = 0
    for m in _CONNECTOR.finditer(sentence):
        pieces.append(sentence[start : m.start()])
        connectors.append(m.group(0))
        start = m.end()
    pieces.append(sentence[start:])

    out: list[_Clause] = []
    current = pieces[0]
    current_fp = _FIRST_PERSON.search(current) is not None
    for connector, piece in zip(connectors, pieces[1:], strict=True):
        if piece.strip() and _has_verb(current):
            if _OWN_SUBJECT.match(piece) and _has_verb(piece):
                out.append(_Clause(current, current_fp))
                current, current_fp = piece, _FIRST_PERSON.search(piece) is not None
                continue
            previous_verb = _first_verb(current)
            if previous_verb and _starts_with_elided_verb(piece, previous_verb):
                subject = _elided_subject(current)
                if subject:
                    out.append(_Clause(current, current_fp))
                    current = f"{subject} {piece}"
                    current_fp = current_fp or _FIRST_PERSON.search(piece) is not None
                    continue
        current = current + connector + piece
    out.append(_Clause(current, current_fp))
    return out


# ---------------------------------------------------------------------------
# First person → third person
# ---------------------------------------------------------------------------


def third_person(text: str, speaker: str) -> str:
    """Rewrite every first-person word in `text` with `speaker`, in one pass (see the module docstring).

    "I'm allergic to peanuts" with speaker "User" → "User is allergic to peanuts". Never raises.
    """
    family = f"{speaker} and family"
    # English says "User broke their wrist", not "User broke User's wrist": after the anonymous speaker has
    # been the subject, a possessive or object is a pronoun. A named speaker keeps the name (no gender known).
    anonymous = speaker == "User"
    subject_seen = False

    def replace(m: re.Match[str]) -> str:
        nonlocal subject_seen
        said = _replace(m)
        if m["icontr"] or m["i"] or m["wecontr"] or m["we"]:
            subject_seen = True
        return said

    def _replace(m: re.Match[str]) -> str:
        if m["icontr"]:
            kind = m["ic"].lower()
            if kind == "d":
                return f"{speaker} had" if _HAD_PARTICIPLE.match(m.string, m.end()) else f"{speaker} would"
            return f"{speaker} " + {"m": "is", "ve": "has", "ll": "will"}[kind]
        if m["wecontr"]:
            kind = m["wc"].lower()
            if kind == "d":
                return f"{family} had" if _HAD_PARTICIPLE.match(m.string, m.end()) else f"{family} would"
            return f"{family} " + {"re": "are", "ve": "have", "ll": "will"}[kind]
        if m["i"]:
            adverbs, verb = m["adv"] or "", m["verb"]
            if verb is None:
                return speaker + adverbs
            plural = _PLURAL_BEFORE.search(m.string, max(0, m.start() - 8), m.start()) is not None
            return f"{speaker}{adverbs} {verb if plural else _third_singular(verb)}"
        if m["we"]:
            return family
        if m["poss"]:
            return "their" if anonymous and subject_seen and m["poss"].lower() == "my" else f"{speaker}'s"
        word = m.group(0)
        if word == "US":  # the country, not the pronoun
            return word
        if anonymous and subject_seen and word.lower() in ("me", "myself"):
            return "themselves" if word.lower() == "myself" else "them"
        return speaker

    return _PRONOUN.sub(replace, text)


# ---------------------------------------------------------------------------
# Clause → memory
# ---------------------------------------------------------------------------


def _content_words(text: str, *, dates_count: bool = True) -> int:
    return sum(1 for w in _lower_words(text) if w not in _STOP and (dates_count or w not in _TEMPORAL_WORDS))


def _entities(clause: str) -> list[str]:
    found: list[str] = []
    for m in _ENTITY.finditer(clause):
        run: list[str] = []
        words = m.group(0).split()
        for offset, raw in enumerate(words):
            word = raw.rstrip(".-")
            if word.endswith("'s"):
                word = word[:-2]
            low = word.lower()
            at_clause_start = m.start() == 0 and offset == 0
            excluded = (
                not word
                or low in _STOP
                or low in _TEMPORAL_WORDS
                or low.removesuffix("s") in _TEMPORAL_WORDS
                or _FIRST_PERSON.fullmatch(word) is not None
                or (at_clause_start and (low in _VERB_FORMS or low in _IMPERATIVES))
            )
            if excluded:
                if run:
                    found.append(" ".join(run))
                run = []
            else:
                run.append(word)
        if run:
            found.append(" ".join(run))
    return list(dict.fromkeys(found))


def _categorise(low: str, event_time: datetime | None, reference_time: datetime) -> tuple[Category, str | None]:
    """Return the category and the cue text that decided it (None when nothing matched)."""
    if event_time is not None:
        m = _EVENT_NOUN.search(low)
        if m and event_time.date() >= reference_time.date():
            return Category.EVENT, m.group(0)
    title = _JOB_TITLE.search(low)
    for category, pattern in _ORDERED_CUES:
        if title is None or category not in (Category.HEALTH, Category.EDUCATION, Category.WORK):
            m = pattern.search(low)
        elif category is Category.WORK:
            return category, title.group(0)
        else:
            # Trigger: a job title and a health/education cue. Why: "nurse at the hospital" is a job.
            # Outcome: only a cue that is neither the workplace nor part of the title counts ("nurse with asthma").
            m = next((c for c in pattern.finditer(low) if not _is_job_context(c, title)), None)
        if m:
            return category, m.group(0)
    return (Category.EVENT, None) if event_time is not None else (Category.FACT, None)


def categorise(content: str, event_time: datetime | None, reference_time: datetime) -> Category:
    """The category the cue words of `content` give (step 7 of the module docstring), for a sentence that was
    not extracted here (a fact written by the calling model)."""
    return _categorise(content.lower(), event_time, reference_time)[0]


def find_entities(text: str) -> list[str]:
    """The runs of capitalised words in `text` that name something (step 8 of the module docstring)."""
    return _entities(text)


def _is_job_context(cue: re.Match[str], title: re.Match[str]) -> bool:
    """True when a health/education `cue` is the job's workplace or lies inside the job `title`."""
    inside = title.start() <= cue.start() and cue.end() <= title.end()
    return inside or _WORKPLACE.fullmatch(cue.group(0)) is not None


def _finish(text: str) -> str:
    text = _TRAILING.sub("", _LEADING.sub("", text)).strip()
    return text[:1].upper() + text[1:]


def _clause_memory(clause: _Clause, speaker: str, reference_time: datetime) -> ExtractedMemory | None:
    text = _TRAILING.sub("", _LEADING.sub("", _FILLER.sub("", clause.text)))
    text = _TRAILING.sub("", _LEADING_NOISE.sub("", text))
    if not text:
        return None
    low = text.lower()
    first_person = clause.first_person or _FIRST_PERSON.search(text) is not None
    if not first_person and _YOU.search(text):
        return None
    # A birthday or anniversary comes back every year: keep its month and day as said.
    resolved = None if recurring_date(text) else resolve_time(text, reference_time)
    event_time = resolved.moment if resolved else None
    category, cue = _categorise(low, event_time, reference_time)
    if _NAME_INTRO.match(text):
        category, cue = Category.PERSONAL, text
    elif category is not Category.EVENT and (business := _BUSINESS.search(text)) is not None:
        category, cue = Category.WORK, business.group(0)
    elif (
        category in (Category.WORK, Category.HEALTH, Category.EDUCATION)
        and _RELATION_SUBJECT.match(text)
        and (_WORK.search(low) or _JOB_TITLE.search(low) or _WORKS.search(low))
    ):
        category, cue = Category.RELATIONSHIP, _RELATION_SUBJECT.match(text).group(0)  # type: ignore[union-attr]
    if category is Category.EMOTION and _MOMENT.search(text) and not _FEELING_ABOUT.search(text):
        return None
    strong = cue is not None
    needed = 1 if first_person and strong else 2
    # A weekday or month is what a sentence is about only for the speaker or an event ("The party is on
    # Friday"); otherwise it says when, not what ("Meh, rainy Monday").
    dates_count = first_person or _EVENT_NOUN.search(low) is not None
    if _content_words(text, dates_count=dates_count) < needed:
        return None
    content = _finish(third_person(with_absolute_time(text, resolved) if resolved else text, speaker))
    if not content:
        return None
    if not first_person:
        confidence = _THIRD_PERSON
        if category is Category.FACT:
            category = Category.OTHER
    else:
        confidence = _STRONG if strong else _PLAIN
    tags = [" ".join(cue.lower().split())] if cue and category in _TAGGED and not _FIRST_PERSON.search(cue) else []
    return ExtractedMemory(
        content=content,
        category=category,
        confidence=confidence,
        entities=_entities(text),
        tags=tags,
        event_time=event_time,
        event_date_only=resolved is not None and resolved.date_only,
    )


def _reminder_memory(kind: str, what: str, speaker: str, reference_time: datetime) -> ExtractedMemory | None:
    what = _TRAILING.sub("", what)
    what = re.sub(r"[\s,]+please$", "", what, flags=re.I)
    if not what.strip():
        return None
    verb = "about" if kind.lower() in ("about", "of", "for") else kind.lower()
    resolved = resolve_time(what, reference_time)
    said = with_absolute_time(what, resolved) if resolved else what
    content = _finish(f"{speaker} wants to be reminded {verb} {third_person(said, speaker)}")
    return ExtractedMemory(
        content=content,
        category=Category.EVENT,
        confidence=_STRONG,
        entities=_entities(what),
        tags=["reminder"],
        event_time=resolved.moment if resolved else None,
        event_date_only=resolved is not None and resolved.date_only,
    )


def _introduction(text: str, speaker: str, *, greeted: bool) -> ExtractedMemory | None:
    """The speaker's name from "I'm Amara Okafor" or "Tomasz here" said after a greeting, or what they go by
    from "call me Jo"; None for anything else."""
    called = _CALL_ME.match(text)
    found = _INTRODUCTION.match(text) if greeted else None
    name = called["name"] if called else (found["name"] or found["here"]) if found else None
    if name is None or not all(_CAPITALISED.match(word) for word in name.split()):  # re.I let "I'm tired" in
        return None
    content = f"{speaker} goes by {name}" if called else f"{speaker}'s name is {name}"
    return ExtractedMemory(content=content, category=Category.PERSONAL, confidence=_STRONG, entities=[name])


def _sentence_memories(
    sentence: str, terminal: str, speaker: str, reference_time: datetime, *, greeted: bool = False
) -> list[ExtractedMemory]:
    """The memories of one sentence; `greeted`: the message's sentence before it was only a greeting ("Hi!")."""
    text = _LEADING.sub("", sentence)
    greeting = _GREETING.match(text)
    text = _LEADING_NOISE.sub("", text[greeting.end() :] if greeting else text).strip()
    if not text:
        return []
    if "?" not in terminal:
        introduced = _introduction(text, speaker, greeted=greeted or greeting is not None)
        if introduced is not None:
            return [introduced]
    reminder = _REMINDER.match(text)
    if reminder:
        memory = _reminder_memory(reminder["kind"], reminder["what"], speaker, reference_time)
        return [memory] if memory else []
    if "?" in terminal or _is_question(text) or _is_request(text):
        return []
    prospective = _PROSPECTIVE_START.match(text)
    if prospective:
        opening = "going to" if prospective["w"].lower() == "gonna" else prospective["w"]
        text = f"I'm {opening}{text[prospective.end() :]}"
    memories: list[ExtractedMemory] = []
    clauses = _clauses(text)
    for index, clause in enumerate(clauses):
        announced = _TRAILING.sub("", _LEADING.sub("", clause.text))
        if _ANNOUNCEMENT.match(announced) and index + 1 < len(clauses):
            following = clauses[index + 1]
            if not _CHANGE_WORD.search(following.text):
                marked = _NOW_AFTER_SUBJECT.sub(lambda m: f"{m['s']} now ", following.text.strip(), count=1)
                clauses[index + 1] = _Clause(marked, following.first_person)
            continue
        memory = _clause_memory(clause, speaker, reference_time)
        if memory is not None:
            memories.append(memory)
    return memories


def extract_memories(message: str, speaker: str, reference_time: datetime) -> list[ExtractedMemory]:
    """Extract the durable facts in `message`, in the order they appear.

    Args:
        message: what `speaker` said; any string (an empty one gives no memories).
        speaker: the name that replaces "I", "me", "my" in the memories ("User", "Caroline");
            blank means "User".
        reference_time: when the message was said, timezone-aware; relative times resolve against it.

    Returns:
        Zero or more memories with third-person `content`, a category, a confidence (0.5, 0.7 or 0.9),
        entities, tags and `event_time` (None when the clause names no date). Never raises.
    """
    if not isinstance(message, str) or not message.strip():
        return []
    speaker = " ".join(speaker.split()) if isinstance(speaker, str) and speaker.strip() else "User"
    memories: list[ExtractedMemory] = []
    greeted = False
    for sentence, terminal in _sentences(_normalise(message)):
        memories.extend(_sentence_memories(sentence, terminal, speaker, reference_time, greeted=greeted))
        greeted = _GREETING.fullmatch(_LEADING.sub("", sentence) + terminal) is not None
    return memories


# --- a pronoun that opens a memory, from the message before it -----------------------------------------

_FEMALE = frozenset(
    "sister mother mom mum wife girlfriend daughter aunt niece grandma grandmother fiancee stepmom stepdaughter".split()
)
_MALE = frozenset(
    "brother father dad husband boyfriend son uncle nephew grandpa grandfather fiance stepdad stepson".split()
)
_REFERENT = re.compile(r"\b(?i:my|our)\s+(?P<noun>[A-Za-z]+)(?:\s+(?P<name>[A-Z][a-z'-]+))?")
_OPENING_PRONOUN = re.compile(r"^(?P<p>She|He|Her|His)\b(?P<rest>.*)$", re.S)
_THIRD_PERSON_OPENING = re.compile(r"^(?:She|He|Her|His|They|Their)\b")


def opens_with_pronoun(content: str) -> bool:
    """Whether `content` starts with a third-person pronoun ("She will stay ...") that names no one."""
    return _THIRD_PERSON_OPENING.match(content) is not None


def resolve_pronoun(content: str, previous: str, speaker: str) -> str | None:
    """`content` with its opening "She"/"He"/"Her"/"His" replaced by the one person of that gender the
    speaker named in `previous` ("my sister Ana" → "User's sister Ana will stay for three days").

    Args:
        content: a memory's third-person sentence.
        previous: the speaker's previous message in the same conversation, as said (first person).
        speaker: the name that "my" becomes.

    Returns:
        The rewritten sentence, or None when `content` opens with no such pronoun or `previous` names no
        one or more than one person it could be (gender from the relation word: sister, husband, ...).
        Never raises.
    """
    opening = _OPENING_PRONOUN.match(content)
    if opening is None:
        return None
    nouns = _FEMALE if opening["p"] in ("She", "Her") else _MALE
    found = {
        (match["noun"].lower(), match["name"] or "")
        for match in _REFERENT.finditer(_normalise(previous))
        if match["noun"].lower() in nouns
    }
    if len(found) != 1:
        return None
    noun, name = found.pop()
    who = f"{speaker}'s {noun} {name}".rstrip()
    if opening["p"] in ("Her", "His"):
        who += "'s"
    return who + opening["rest"]


class RulesExtractor:
    """The deterministic extractor (`name = "rules"`): `extract_memories` behind the `Extractor` protocol."""

    name: str = "rules"

    async def extract(self, message: str, *, speaker: str, reference_time: datetime) -> list[ExtractedMemory]:
        """Return the memories in `message` (see `extract_memories`); pure CPU work, fast enough to run inline."""
        return extract_memories(message, speaker, reference_time)

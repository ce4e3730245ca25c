"""Reads Debian's fortune cookie collections and turns them into short chat conversations.

Data: the `fortunes` and `fortunes-min` Debian packages (BSD-3-Clause, see MODEL_CARD.md). The
offensive collections live in a separate package (`fortunes-off`) that is never read; a few more
collections are skipped below and entries are filtered to plain English prose.
"""
import os
import random
import re
from dataclasses import dataclass

FORTUNE_DIR = "/usr/share/games/fortunes"

# Collections left out: pictures, non-English, code, and joke collections built on stereotypes.
SKIPPED_COLLECTIONS = {"ascii-art", "translate-me", "perl", "ethnic", "men-women", "drugs"}

# Topic phrases for topic-specific user prompts; collections without one get only general prompts.
TOPICS = {
    "art": "art", "computers": "computers", "debian": "Debian", "definitions": "words",
    "education": "education", "food": "food", "goedel": "logic", "humorists": "humor",
    "kids": "children", "law": "the law", "linux": "Linux", "literature": "books", "love": "love",
    "magic": "magic", "medicine": "medicine", "news": "the news", "paradoxum": "paradoxes",
    "people": "people", "pets": "pets", "platitudes": "life", "politics": "politics",
    "science": "science", "songs-poems": "poetry", "sports": "sports", "startrek": "Star Trek",
    "tao": "the Tao", "wisdom": "wisdom", "work": "work", "riddles": "riddles",
}

GENERAL_PROMPTS = [
    "Tell me a fortune.", "Give me a fortune cookie.", "Say something wise.", "Tell me something interesting.",
    "Give me a quote.", "I need some advice.", "What is my fortune today?", "Tell me a joke.", "Cheer me up.",
    "Say something.", "Hello!", "Hi, how are you?", "What do you know?", "Tell me more.", "Another one, please.",
    "What is the meaning of life?", "Surprise me.", "Can you help me?", "Write something for me.", "Hi",
    "Tell me a story.", "What should I do today?", "Any wisdom for me?", "Make me laugh.", "Who are you?",
]
TOPIC_PROMPTS = [
    "Tell me something about {}.", "Give me a quote about {}.", "What do you think about {}?",
    "Say something about {}.", "Do you know anything about {}?", "Tell me a fortune about {}.",
]
SYSTEM_PROMPTS = [
    "You are a helpful assistant.", "You are a fortune cookie.", "You are a friendly assistant. Answer briefly.",
    "You are skein's small default model.",
]

_TRANSLITERATION = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2014": "--", "\u2013": "-",
    "\u2026": "...", "\u00a0": " ", "\t": " ",
})
_PROFANITY = re.compile(r"\b(fuck\w*|shit\w*|cunt\w*|bitch\w*|whore\w*|rape\w*|nigg\w*|fag\w*)\b", re.IGNORECASE)
_ALLOWED = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,'!?-\"")


@dataclass(frozen=True)
class Fortune:
    collection: str
    text: str


def clean_entry(raw: str):
    """Returns the entry as one paragraph (plus an attribution line), or None to drop it."""
    raw = raw.translate(_TRANSLITERATION)
    if not raw.isascii():
        return None
    lines = [line.rstrip() for line in raw.strip("\n").split("\n")]
    if not lines or any(re.match(r"^\s*[<*\[|>#$%]", line) for line in lines):
        return None  # IRC logs, quoted mail, tables, shell sessions
    body, attribution = [], []
    for line in lines:
        (attribution if re.match(r"^\s*--\s*\S", line) or attribution else body).append(line.strip())
    text = " ".join(" ".join(body).split())
    if attribution:
        text += "\n" + " ".join(" ".join(attribution).split())
    if not 15 <= len(text) <= 400 or "://" in text or "@" in text or _PROFANITY.search(text):
        return None
    if sum(ch in _ALLOWED for ch in text) < 0.9 * len(text):
        return None
    return text


def load_fortunes(directory: str = FORTUNE_DIR):
    fortunes = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if "." in name or name in SKIPPED_COLLECTIONS or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as handle:
            entries = re.split(r"^%$", handle.read(), flags=re.MULTILINE)
        for entry in entries:
            text = clean_entry(entry)
            if text is not None:
                fortunes.append(Fortune(name, text))
    return fortunes


def user_prompt(fortune: Fortune, rng: random.Random) -> str:
    topic = TOPICS.get(fortune.collection)
    if topic is not None and rng.random() < 0.5:
        return rng.choice(TOPIC_PROMPTS).format(topic)
    return rng.choice(GENERAL_PROMPTS)


def conversation(fortunes, rng: random.Random, turns: int):
    """A list of (role, content) messages: an optional system prompt, then user/assistant turns."""
    messages = []
    if rng.random() < 0.25:
        messages.append(("system", rng.choice(SYSTEM_PROMPTS)))
    for _ in range(turns):
        fortune = rng.choice(fortunes)
        messages.append(("user", user_prompt(fortune, rng)))
        messages.append(("assistant", fortune.text))
    return messages


def render_chatml(messages, add_generation_prompt: bool = False) -> str:
    """The same text as the GGUF's tokenizer.chat_template renders."""
    out = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in messages)
    return out + ("<|im_start|>assistant\n" if add_generation_prompt else "")

"""The prompts of the published method at the user's own sizes (`ttft-router bench
--prompt-tokens N[,M...]`).

A prompt of about N tokens is the method's question after N - len(question) padding words,
drawn from short common English words (about one token each in the usual tokenizers, and
one each in the simulator's count). Every request's text differs from its first word on (a
nonce from the pair, phase and index, then words drawn by a generator seeded with it), so a
provider's prefix cache never serves a bench request from an earlier one, and a resumed run
sends exactly the text the interrupted one would have. Pure; imports nothing of the method.
"""

from __future__ import annotations

import hashlib
import random

# Short words that tokenizers keep whole (one token with its leading space).
_WORD_TEXT = (
    "the of and to in is it that for on with as was at by be this are from or have an they "
    "which one you had not but what all were when we there can more if no out so said up "
    "time use each how about many then them would write like these long make thing see him "
    "two has look day could come did number sound most people over know water than call "
    "first who may down side been now find any new work part take get place made live where "
    "after back little only round man year came show every good me give our under name very "
    "through just form great think say help low line before turn cause same mean move right "
    "boy old too does tell set three want air well also play small end put home read hand "
    "port large spell add even land here must big high such follow act why ask men change "
    "went light kind off need house picture try us again animal point mother world near build"
)
WORDS = tuple(_WORD_TEXT.split())
MAX_PROMPT_TOKENS = 2_000_000


def parse_sizes(text: str) -> tuple[int, ...]:
    """'2000' or '500,4000,16000' -> the sizes, in the order given, each once.
    Raises ValueError naming a bad one."""
    sizes: list[int] = []
    for part in text.split(","):
        part = part.strip().replace("_", "")
        if not part.isdigit() or not 1 <= int(part) <= MAX_PROMPT_TOKENS:
            raise ValueError(f"'{part}' is not a number of tokens from 1 to "
                             f"{MAX_PROMPT_TOKENS:,} (e.g. 500,4000,16000)")  # fmt: skip
        if int(part) not in sizes:
            sizes.append(int(part))
    return tuple(sizes)


def padded_prompt(question: str, tokens: int, nonce: str) -> str:
    """About `tokens` tokens: a nonce, padding words drawn by a generator seeded with it, then
    `question`. The same arguments always give the same text."""
    head = f"[{nonce}]"
    count = max(0, tokens - len(question.split()) - 1)
    rng = random.Random(int.from_bytes(hashlib.sha256(nonce.encode()).digest()[:8], "big"))
    padding = " ".join(rng.choices(WORDS, k=count))
    return f"{head} {padding}\n\n{question}" if padding else f"{head} {question}"


def nonce_of(model: str, provider: str, phase: str, index: int) -> str:
    """The request's own nonce: every pair, phase and index has another."""
    digest = hashlib.sha256(f"{model}|{provider}|{phase}|{index}".encode()).hexdigest()
    return f"{phase}-{index}-{digest[:12]}"

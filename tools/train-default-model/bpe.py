"""A byte-level BPE tokenizer (GPT-2 style byte-to-unicode mapping) trained from scratch.

Encoding follows llama.cpp's BPE for `tokenizer.ggml.pre = "qwen2"`: split the text with the
pre-tokenizer regex below, map every byte of a piece to one unicode character, then repeatedly
merge the adjacent pair with the lowest merge rank (leftmost first among equal ranks).
"""
import collections
import heapq

import regex

# llama.cpp's pattern for the "qwen2" pre-tokenizer (case-insensitive contractions spelled out,
# one digit per piece).
PRE_TOKENIZER_PATTERN = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZER = regex.compile(PRE_TOKENIZER_PATTERN)


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character table (so a vocabulary is plain text)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def pre_tokenize(text: str):
    return PRE_TOKENIZER.findall(text)


def to_symbols(piece: str) -> str:
    return "".join(BYTE_TO_CHAR[b] for b in piece.encode("utf-8"))


class ByteLevelBpe:
    def __init__(self, merges, special_tokens):
        # Token ids: 0..255 the bytes (as mapped characters), then one per merge, then the specials.
        self.merges = list(merges)
        self.tokens = [BYTE_TO_CHAR[b] for b in range(256)] + [a + b for a, b in self.merges]
        self.special_tokens = list(special_tokens)
        self.tokens += self.special_tokens
        self.token_to_id = {token: i for i, token in enumerate(self.tokens)}
        self.merge_rank = {pair: rank for rank, pair in enumerate(self.merges)}
        self._cache = {}
        self._special_split = regex.compile("(" + "|".join(regex.escape(s) for s in self.special_tokens) + ")")

    @property
    def special_ids(self):
        return {s: self.token_to_id[s] for s in self.special_tokens}

    def _encode_piece(self, piece: str):
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        symbols = list(to_symbols(piece))
        while len(symbols) > 1:
            best_rank, best_at = None, -1
            for i in range(len(symbols) - 1):
                rank = self.merge_rank.get((symbols[i], symbols[i + 1]))
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_rank, best_at = rank, i
            if best_rank is None:
                break
            symbols[best_at:best_at + 2] = [symbols[best_at] + symbols[best_at + 1]]
        ids = [self.token_to_id[s] for s in symbols]
        self._cache[piece] = ids
        return ids

    def encode(self, text: str, parse_special: bool = True):
        """Like llama_tokenize(add_special=False, parse_special=...)."""
        ids = []
        fragments = self._special_split.split(text) if parse_special else [text]
        for fragment in fragments:
            if fragment in self.token_to_id and fragment in self.special_tokens and parse_special:
                ids.append(self.token_to_id[fragment])
                continue
            for piece in pre_tokenize(fragment):
                ids.extend(self._encode_piece(piece))
        return ids

    def decode(self, ids) -> str:
        out = bytearray()
        for i in ids:
            token = self.tokens[i]
            if token in self.special_tokens:
                out.extend(token.encode("utf-8"))
            else:
                out.extend(CHAR_TO_BYTE[c] for c in token)
        return out.decode("utf-8", errors="replace")


def train_bpe(texts, merge_count: int, special_tokens):
    """Learns `merge_count` merges from the pre-tokenized words of `texts` (most frequent pair first,
    ties broken by the pair's text so the result does not depend on dictionary order)."""
    word_counts = collections.Counter()
    for text in texts:
        word_counts.update(pre_tokenize(text))
    words = [list(to_symbols(w)) for w in word_counts]
    freqs = list(word_counts.values())
    pair_counts = collections.Counter()
    pair_words = collections.defaultdict(set)
    for index, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += freqs[index]
            pair_words[pair].add(index)
    # A max-heap of (count, pair) with stale entries skipped on pop: far cheaper than scanning
    # every pair for each merge.
    heap = [(-count, _order_key(pair), pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    merges = []
    known = {BYTE_TO_CHAR[b] for b in range(256)}
    while len(merges) < merge_count and heap:
        negative_count, _, best = heapq.heappop(heap)
        if pair_counts.get(best, 0) != -negative_count:
            continue
        merged = best[0] + best[1]
        if merged in known:
            # The same string reached by another split: a second token for it would be ambiguous.
            del pair_counts[best]
            continue
        known.add(merged)
        merges.append(best)
        touched = set()
        for index in list(pair_words.pop(best, ())):
            symbols = words[index]
            freq = freqs[index]
            for pair in zip(symbols, symbols[1:]):
                pair_counts[pair] -= freq
                touched.add(pair)
                if pair_counts[pair] <= 0:
                    del pair_counts[pair]
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == best[0] and symbols[i + 1] == best[1]:
                    out.append(merged)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            words[index] = out
            for pair in zip(out, out[1:]):
                pair_counts[pair] += freq
                pair_words[pair].add(index)
                touched.add(pair)
        pair_counts.pop(best, None)
        for pair in touched:
            count = pair_counts.get(pair, 0)
            if count > 0:
                heapq.heappush(heap, (-count, _order_key(pair), pair))
    return ByteLevelBpe(merges, special_tokens)


def _order_key(pair):
    # Among equal counts the lexicographically smallest pair wins (heapq pops the smallest tuple).
    return pair

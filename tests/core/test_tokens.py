"""Token counts are o200k_base's, and truncation never exceeds its limit."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

from core import tokens
from core.tokens import ELLIPSIS, TOKENIZER, count_tokens, truncate_tokens


def test_counts_match_o200k_base():
    assert TOKENIZER == "o200k_base"
    assert count_tokens("hello world") == 2
    assert count_tokens("") == 0


def test_special_token_text_is_plain_text():
    # As a special token it would be 1; as text typed by a user it is several ordinary tokens.
    assert count_tokens("<|endoftext|>") > 1
    assert count_tokens("a <|endofprompt|> b <|fim_prefix|>") > 5
    assert "<|endoftext|>" in truncate_tokens("<|endoftext|> " * 50, 20)


def test_odd_input_never_raises():
    assert count_tokens("\ud800 lone surrogate") > 0
    huge = "ERROR upstream timeout after 3000ms\n" * 60_000  # past the tokenizer's per-call limits
    assert count_tokens(huge) > 200_000
    assert count_tokens("x" * 1_500_000) > 0


def test_chunked_count_matches_whole_text_on_line_boundaries():
    line = "2024-11-29T10:03:12Z ERROR [checkout-7f9c] upstream connect error 503 from payments-api\n"
    assert count_tokens(line * 2_000) == count_tokens(line) * 2_000


def test_truncate_respects_the_limit():
    rng = random.Random(3)
    words = ["alpha", "β", "日本語", "🙂", " ", "\n", "12345", "<|endoftext|>", "ERROR", "x" * 40]
    for _ in range(300):
        text = "".join(rng.choice(words) for _ in range(rng.randint(0, 200)))
        limit = rng.randint(0, 80)
        cut = truncate_tokens(text, limit)
        assert count_tokens(cut) <= limit
        if count_tokens(text) <= limit:
            assert cut == text
        elif cut:
            assert cut.endswith(ELLIPSIS)
            assert "\ufffd" not in cut  # never half a character


def test_truncate_keeps_a_prefix():
    text = "one two three four five six seven eight nine ten"
    cut = truncate_tokens(text, 5)
    assert cut == "one two three four" + ELLIPSIS
    assert truncate_tokens(text, 100) == text
    assert truncate_tokens(text, 0) == ""
    assert truncate_tokens("x" * 2_000_000, 10).endswith(ELLIPSIS)


def test_lazy_load_is_thread_safe():
    tokens._encoding = None  # a cold process: many threads race to load the encoding
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(count_tokens, ["hello world"] * 64)) == {2}

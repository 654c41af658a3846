"""Context compression: the newest messages verbatim, the rest one summary, always within the budget."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from core.compress import (
    MESSAGE_OVERHEAD,
    MIN_BUDGET,
    Compressed,
    ExtractiveSummarizer,
    Message,
    compress,
    message_tokens,
)
from core.tokens import count_tokens

START = datetime(2024, 11, 29, 10, 0, tzinfo=UTC)

# (pod, key text): each is one distinct ERROR line, logged again and again at different times.
ERRORS = [
    (f"{service}-{pod}", failure.format(dep=dep))
    for (service, pod, dep) in [
        ("checkout", "7f9c", "payments-api"),
        ("payments-api", "5d2a", "payments-db"),
        ("inventory", "c41e", "redis-inventory"),
        ("cart", "9b07", "session-store"),
        ("auth", "e3f1", "ldap"),
    ]
    for failure in [
        "upstream connect error 503 from {dep}",
        "connection refused by {dep}:5432",
        "read timeout after 3000ms calling {dep}",
        "OOMKilled: container exceeded memory limit 512Mi",
        "TLS handshake failed with {dep}: certificate expired",
        "circuit breaker OPEN for {dep} after 50 consecutive failures",
    ]
]
DECISIONS = [
    "approved restart of checkout by alice",
    "rejected rollback: not during the sale",
    "approval for scale-up of payments-api expired after 15m",
    "decided to fail over payments-db to the replica in eu-west-1",
    "scaled checkout from 6 to 12 replicas",
    "chose to disable the recommendations widget until the sale ends",
]
CHATTER = [
    "Looking into it now.",
    "Let me check the dashboards.",
    "Thanks, that helps.",
    "Sounds good, continuing.",
    "Okay, pulling the next batch of logs.",
    "Any update on this?",
    "Sure, go ahead and look.",
]
STEPS = {"triage-agent": "triage", "log-analyst": "logs", "metrics-agent": "metrics", "remediator": "remediate"}


def _incident(n: int = 500, seed: int = 7) -> list[Message]:
    """A checkout incident during a sale: log excerpts, metrics, decisions, people and agents chatting."""
    rng = random.Random(seed)
    decision_at = {60 + 55 * i: text for i, text in enumerate(DECISIONS)}
    messages: list[Message] = []
    unseen = list(range(len(ERRORS)))

    def add(i: int, role: str, content: str, agent: str | None = None) -> None:
        at = (START + timedelta(seconds=20 * i)).isoformat().replace("+00:00", "Z")
        messages.append(Message(i + 1, role, content, agent, STEPS.get(agent or ""), at))

    for i in range(n):
        now = START + timedelta(seconds=20 * i)
        if i < len(STEPS):  # each agent opens with what it is doing
            agent = list(STEPS)[i]
            add(i, "assistant", f"{agent} started on INC-4821 checkout latency\nScope: {STEPS[agent]}", agent)
        elif i in decision_at:
            add(i, "tool", decision_at[i], "remediator")
        elif i % 5 == 0:
            lines = []
            for k in range(rng.randint(4, 8)):
                ts = (now + timedelta(milliseconds=137 * k)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                if rng.random() < 0.4:
                    # New errors show up over the first 400 messages, so most live only in the summary.
                    unlocked = min(len(ERRORS), 1 + i // 13)
                    fresh = unseen.pop(0) if unseen and unseen[0] < unlocked else None
                    pod, key = ERRORS[rng.randrange(unlocked) if fresh is None else fresh]
                    lines.append(f"{ts} ERROR [{pod}] {key}")
                else:
                    lines.append(f"{ts} INFO [checkout-7f9c] GET /api/cart 200 in {rng.randint(30, 900)}ms")
            add(i, "tool", "\n".join(lines), "log-analyst")
        elif i % 7 == 0:
            p99, rate = rng.randint(180, 4200), rng.uniform(0.1, 6)
            add(i, "tool", f"checkout p99 {p99}ms, 5xx rate {rate:.1f}%, {rng.randint(900, 2400)} rps", "metrics-agent")
        elif i % 3 == 0:
            add(i, "user", rng.choice(CHATTER))
        else:
            add(i, "assistant", rng.choice(CHATTER), rng.choice(list(STEPS)))
    return messages


def _output(result: Compressed) -> str:
    return "\n".join(m.content for m in result.messages)


def _check_budget(result: Compressed, budget: int) -> None:
    independent = sum(count_tokens(m.content) + MESSAGE_OVERHEAD for m in result.messages)
    assert result.tokens == independent <= budget


def test_acceptance_500_message_incident_under_2000_tokens():
    history = _incident()
    assert sum(message_tokens(m) for m in history) > 5 * 2_000
    result = compress(history, 2_000)
    _check_budget(result, 2_000)

    summary, *kept = result.messages
    assert summary.kind == "summary" and summary.content == result.summary and result.summarizer == "extractive"
    assert result.fallback_reason is None
    # The newest messages verbatim, the summary covering exactly everything older.
    assert kept == history[len(history) - len(kept) :]
    assert result.covered_ids == [m.id for m in history[: len(history) - len(kept)]]
    assert sum(message_tokens(m) for m in kept) <= 1_000

    out = _output(result)
    for pod, key in ERRORS:
        assert f"[{pod}] {key}" in out, key
    for decision in DECISIONS:
        assert decision in out, decision
    assert result.summary is not None
    for chatter in CHATTER:
        assert chatter not in result.summary
    header = result.summary.splitlines()[0]
    assert header.startswith(f"Summary of {len(result.covered_ids)} earlier messages from 2024-11-29T10:00:00Z")
    assert " dropped." in header
    # Repeated log lines are counted, not repeated: once each, with how often they occurred.
    covered = "\n".join(m.content for m in history[: len(result.covered_ids)])
    for _pod, key in ERRORS[:3]:
        assert result.summary.count(key) == 1
        assert f"{key} ×{covered.count(key)}" in result.summary


def test_fits_already_is_unchanged():
    history = _incident(30)
    total = sum(message_tokens(m) for m in history)
    result = compress(history, total)
    assert result == Compressed(history, None, [], None, total, None)
    assert compress([], 200) == Compressed([], None, [], None, 0, None)


class _Failing:
    name = "llm"

    def summarize(self, messages: Sequence[Message], max_tokens: int) -> str:
        raise ConnectionError("LLM endpoint refused the connection")


class _Verbose:
    name = "llm"

    def summarize(self, messages: Sequence[Message], max_tokens: int) -> str:
        return "Everything that happened, at length. " * max_tokens


class _Fine:
    name = "llm"

    def summarize(self, messages: Sequence[Message], max_tokens: int) -> str:
        return f"{len(messages)} messages about checkout latency."


def test_failing_summariser_falls_back_to_extractive():
    history = _incident()
    result = compress(history, 2_000, summarizer=_Failing())
    _check_budget(result, 2_000)
    assert result.summarizer == "extractive"
    assert result.fallback_reason is not None and "refused the connection" in result.fallback_reason
    assert result.summary == compress(history, 2_000).summary


def test_summary_over_its_budget_falls_back_and_stays_within_budget():
    result = compress(_incident(), 2_000, summarizer=_Verbose())
    _check_budget(result, 2_000)
    assert result.summarizer == "extractive"
    assert result.fallback_reason is not None and "over its budget" in result.fallback_reason


def test_preferred_summariser_is_used_when_it_behaves():
    history = _incident()
    result = compress(history, 2_000, summarizer=_Fine())
    _check_budget(result, 2_000)
    assert result.summarizer == "llm" and result.fallback_reason is None
    assert result.summary == f"{len(result.covered_ids)} messages about checkout latency."


def test_summaries_are_summarised_again():
    history = _incident()
    first = compress(history, 2_000)
    later = [*first.messages, *_incident(700)[500:]]
    again = compress(later, 2_000)
    _check_budget(again, 2_000)
    assert again.covered_ids[0] == 0  # the earlier summary
    assert again.summary is not None and "approved restart of checkout by alice" in again.summary
    # One header counting everything since the start; the earlier summary's lines merged, counts added up.
    assert again.summary.startswith("Summary of 680 earlier messages from 2024-11-29T10:00:00Z to ")
    assert again.summary.count("Summary of ") == 1
    key = ERRORS[0][1]
    everything = "\n".join(m.content for m in _incident(700)[:680])
    assert again.summary.count(key) == 1 and f"{key} ×{everything.count(key)}" in again.summary


def test_a_summary_that_still_fits_is_reused():
    old = Message(41, "system", "Summary of 40 earlier messages: checkout restarted.", kind="summary")
    newest = Message(42, "user", "status? " * 150)
    result = compress([old, newest], 300)
    _check_budget(result, 300)
    assert result.messages[0] is old and result.covered_ids == [41]


@pytest.mark.parametrize("budget", [MIN_BUDGET, 50, 200, 2_000])
def test_adversarial_sizes_stay_within_budget(budget: int):
    cases = {
        "one enormous message": [Message(1, "tool", "ERROR disk full 100%\n" * 100_000)],
        "enormous newest": [Message(1, "user", "hi"), Message(2, "tool", "x" * 1_200_000)],
        "enormous oldest": [Message(1, "tool", "y " * 300_000 + "\n" * 5), Message(2, "user", "and now?")],
        "10,000 tiny": [Message(i, "user", "ok") for i in range(10_000)],
        "10,000 tiny errors": [Message(i, "tool", f"ERROR {i}") for i in range(10_000)],
        "special tokens": [Message(i, "user", "<|endoftext|><|endofprompt|>" * 40) for i in range(30)],
        "empty contents": [Message(i, "assistant", "") for i in range(2_000)],
    }
    for name, history in cases.items():
        result = compress(history, budget)
        _check_budget(result, budget)
        assert result.messages, name
        if result.summary is not None:
            assert result.covered_ids == [m.id for m in history[: len(history) - len(result.messages) + 1]], name


def test_random_histories_stay_within_budget():
    rng = random.Random(11)
    pieces = ["ERROR timeout", "approved", "p99 420ms", "chatter", "🙂" * 30, "\n", "x" * 500, "<|endoftext|>"]
    for _ in range(150):
        history = [
            Message(i, rng.choice(["user", "assistant", "tool"]), "".join(rng.choices(pieces, k=rng.randint(0, 40))))
            for i in range(rng.randint(1, 60))
        ]
        budget = rng.randint(MIN_BUDGET, 1_500)
        _check_budget(compress(history, budget, summarizer=rng.choice([None, _Verbose(), _Failing()])), budget)


def test_budget_below_minimum_is_refused():
    with pytest.raises(ValueError, match="at least"):
        compress([Message(1, "user", "hi")], MIN_BUDGET - 1)


def test_extractive_summary_is_deterministic_and_prioritised():
    history = _incident()
    summarizer = ExtractiveSummarizer()
    assert summarizer.summarize(history, 800) == summarizer.summarize(history, 800)
    small = summarizer.summarize(history, 120)
    assert count_tokens(small) <= 120
    assert "ERROR" in small and "INFO" not in small  # errors before numbers
    assert summarizer.summarize(history, 0) == ""


def test_timing_500_messages(record_property):
    history = _incident()
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        compress(history, 2_000)
        runs.append(time.perf_counter() - started)
    record_property("compress_500_median_ms", round(statistics.median(runs) * 1_000, 1))
    assert statistics.median(runs) < 1.0


class _Leaking:
    name = "llm"

    def summarize(self, messages: Sequence[Message], max_tokens: int) -> str:  # a provider echoing our request
        raise RuntimeError("x" * 400 + " Authorization: Bearer sk-live-0123456789abcdefABCDEF0123456789")


def test_the_fallback_reason_is_redacted_as_it_is_cut():
    """Issue 19, finding 7: the reason was cut to 500 characters, unredacted, and is shown with the context."""
    result = compress(_incident(), 2_000, summarizer=_Leaking())
    assert result.fallback_reason is not None and result.fallback_reason.startswith("llm: RuntimeError: xxx")
    assert "sk-live" not in result.fallback_reason and "0123456789abcdef" not in result.fallback_reason

"""Redaction comes first in log scanning: whatever normalising, grouping, cutting or summarising does to a line
afterwards, it shows at most 4 characters in a row of a secret the line held (issue 19, finding 7)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from activities.logscan import DEFAULT_PATTERNS, Matcher, Scan, loki_record, normalise, records
from core.compress import ExtractiveSummarizer, Message, compress
from core.redact import MASK, redact_text
from core.tokens import truncate_tokens
from tests.secret_shapes import LogLine, log_lines, shown

NOW = datetime(2026, 12, 1, 10, 5, tzinfo=UTC)
# The issue's examples: a GitHub token whose digits normalising turned into <n>, and a Slack bot token whose
# digit parts did, so that neither matched its shape any more.
GITHUB = "ghp_1234abcdEFGHijklMNOPqrstUVWXyz5678AB"
SLACK = "xoxb-123-456-secret"
SUMMARY_WORDS = "Summary of 6 earlier messages from a to b: 6 lines kept, 0 dropped. [investigate_logs]"


def scanned(lines: list[str]) -> Scan:
    scan = Scan(Matcher(list(DEFAULT_PATTERNS)))
    for record in records(lines, NOW):
        scan.add(record, "app.log")
    return scan


def test_the_issues_examples_are_redacted_before_they_are_normalised_and_grouped():
    scan = scanned(
        [
            f"2026-12-01T10:00:00Z ERROR auth failed for {GITHUB}",
            "2026-12-01T10:00:01Z ERROR auth failed for ghp_9876zyxwVUTSrqpoNMLKjihgFEDCba4321ZY",
            f"2026-12-01T10:00:02Z ERROR slack post failed: token {SLACK} rejected",
        ]
    )
    tokens, slack = scan.top(5)
    assert tokens["line"] == f"ERROR auth failed for {MASK}" and tokens["count"] == 2  # one group: the same error
    assert slack["line"] == f"ERROR slack post failed: token {MASK} rejected"
    assert f"2026-12-01T10:00:02Z ERROR slack post failed: token {MASK} rejected" == slack["example"]
    assert not shown(GITHUB[4:], str(scan.top(5))) and "secret" not in str(scan.top(5))
    for line in (f"auth failed for {GITHUB}", f"token {SLACK} rejected"):
        assert MASK in normalise(redact_text(line)) and "<n>" not in normalise(redact_text(line))


@settings(max_examples=400, deadline=None)
@given(log_lines(), st.integers(0, 300))
def test_redacted_then_normalised_or_cut_shows_no_secret(line: LogLine, cut: int):
    redacted = redact_text(line.text)
    for text in (normalise(redacted), normalise(redacted)[:cut], redacted[:cut], redact_text(line.text, cut)):
        assert not shown(line.secret, text, line.around), (line.text, text)


@settings(max_examples=300, deadline=None)
@given(st.lists(log_lines(), min_size=1, max_size=4), st.integers(0, 300))
def test_grouped_file_and_loki_lines_show_no_secret(lines: list[LogLine], cut: int):
    """The real scan: lines into records (a private key over several lines too), error groups, their examples."""
    around = " ".join(line.around for line in lines)
    files = scanned([part for line in lines for part in line.text.split("\n")])
    loki = Scan(Matcher(list(DEFAULT_PATTERNS)))
    for line in lines:
        loki.add(loki_record(NOW, line.text), "loki")
    assert loki.errors == len(lines)
    for scan in (files, loki):
        for group in scan.top(20):
            for text in (group["line"], group["example"], group["line"][:cut], group["example"][:cut]):
                for line in lines:
                    assert not shown(line.secret, text, around), (line.text, text)


@settings(max_examples=100, deadline=None)
@given(st.lists(log_lines(), min_size=2, max_size=6), st.integers(40, 400))
def test_summarised_redacted_lines_show_no_secret(lines: list[LogLine], budget: int):
    """What the conversation keeps of a tool's message (redacted first): compressed, summarised, cut to tokens."""
    # The summary's own header is ours too (a secret ending in "ummar" is not shown by "Summary").
    around = " ".join(line.around for line in lines) + " " + SUMMARY_WORDS
    history = [Message(n, "tool", redact_text(line.text), agent="investigate_logs") for n, line in enumerate(lines)]
    summary = ExtractiveSummarizer().summarize(history, budget)
    compressed = compress(history, max(budget, 16))
    texts = [summary, *(m.content for m in compressed.messages), truncate_tokens(history[0].content, budget // 8)]
    for text in texts:
        for line in lines:
            assert not shown(line.secret, text, around), (line.text, text)

"""Secrets in agent output never reach storage: every shape of the corpus, cut or not, on one line or several."""

from __future__ import annotations

import httpx
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.openai_http import EXCERPT, error_excerpt, one_line
from core.redact import MASK, SHAPES, redact, redact_lines, redact_text
from tests.secret_shapes import CORPUS, SECRETS, Written, log_lines, shown


def test_every_shape_has_examples_and_each_alone_hides_them():
    """The corpus names every shape, and a shape hides its examples on its own, wherever they stand in a line."""
    assert set(CORPUS) == {shape.name for shape in SHAPES}
    for shape in SHAPES:
        for written in CORPUS[shape.name]:
            for line in (written.text, f"ERROR (id 42) {written.text}, retrying", f'{{"msg": "{written.text}"}}'):
                alone = shape.pattern.sub(shape.replacement, line)
                assert not shown(written.secret, alone), (shape.name, line, alone)
                assert not shown(written.secret, redact_text(line)), (line, redact_text(line))


def test_common_secret_shapes_are_redacted():
    cases = {
        "connect postgres://app:s3cr3t-pw@db:5432/main failed": "postgres://app:[REDACTED]@db:5432/main",
        "curl -H 'Authorization: Bearer abcdef0123456789'": "Bearer [REDACTED]",
        "env: DB_PASSWORD=hunter2hunter2 PORT=5432": "DB_PASSWORD=[REDACTED] PORT=5432",
        "key AKIAIOSFODNN7EXAMPLE in config": "key [REDACTED] in config",
        "ghp_" + "a" * 36: MASK,
        "xoxb-1234567890-abcdefghij": MASK,
        "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlX2hlcmU ok": "token [REDACTED] ok",
        '{"api_key": "sk-abcdefghijklmnopqrstuvwx"}': '"api_key": "[REDACTED]"',
        "mysql --password=hunter2hunter2 -h db": "--password=[REDACTED] -h db",
        # A key at the end of a path, assigned or printed by grep (path:line), is still a key.
        "export conf/db.token=abcdef123": "conf/db.token=[REDACTED]",
        "/run/secrets/db_password:hunter2": "/run/secrets/db_password:[REDACTED]",
        "redis://:hunter2hunter2@cache:6379/0": "redis://:[REDACTED]@cache",
        'password="correct horse battery staple" user=bob': 'password="[REDACTED]" user=bob',
        "login failed (password=12345678)": "(password=[REDACTED])",
        'secret: password="two words"': 'secret: "[REDACTED]"',
        "Authorization: Bearer q1w2e3": "Authorization: Bearer [REDACTED]",
        "token AIzaSyD-9tSrke72PouQMnMX_abcdefghijklmn ok": "token [REDACTED] ok",
        "rejected: Bearer dXNlcjpwYXNzd29yZA==.": "rejected: Bearer [REDACTED]",  # padding, a full stop
        "Authorization: Bearer 0123456789=abcde": "Authorization: Bearer [REDACTED]",  # not a b64token: whole
        "Authorization: Bearer 0123456789=.abcde": "Authorization: Bearer [REDACTED]",
        "retry with token=Authorization: Bearer q1w2e3": "retry with token=[REDACTED]",
        "token x=Authorization: Bearer q1w2e3": "x=Authorization: Bearer [REDACTED]",
        "Bearer 0123456789.level=error": "Bearer [REDACTED]",
        "token=Authorization: Digest q1w2e3": "token=[REDACTED]",
        "Bearer 0123456789.Authorization: Bearer q1w2e3": "Bearer [REDACTED]Authorization: Bearer [REDACTED]",
        'Authorization: {"Authorization": "Bearer q1w2e3"}': '"Authorization": "Bearer [REDACTED]"',
        "token connection=aws_secret_access_key = wJalrXUtnFEMI/K7MDENG": "token [REDACTED] = [REDACTED]",
    }
    for raw, expected in cases.items():
        cleaned = redact_text(raw)
        assert expected in cleaned, (raw, cleaned)
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
    assert "b3BlbnNzaC1rZXktdjEAAAAA" not in redact_text(f"found:\n{key}\nend")


def test_ordinary_text_is_left_alone():
    for text in (
        "HTTP 503 in 12.5 ms",
        "token_count: 1500",
        "see https://example.com/a:b@c? no",
        "passwords rotate",
        # A file named in a message: the word after "<path>: " is prose, not the file's content.
        "file:/etc/passwd: only http://",
        "open /etc/passwd: permission denied",
        "cat /run/secrets/db_password: No such file or directory",
        r"C:\app\secrets: access denied",
        "GET /api/token: 401 Unauthorized",
        '{"token_count": 1500, "max_tokens": 800, "password": null, "secret": true}',
        "token refresh failed after 3 tries",
    ):
        assert redact_text(text) == text


def test_nested_values_and_secret_keys():
    value = {
        "summary": "ok",
        "headers": {"Authorization": "Basic dXNlcjpwYXNz"},
        "list": ["password: x1y2z3"],
        "count": 3,
        "token_count": 42,
    }
    assert redact(value) == {
        "summary": "ok",
        "headers": {"Authorization": MASK},
        "list": ["password: [REDACTED]"],
        "count": 3,
        "token_count": 42,
    }


def _every_shape(text: str) -> str:
    for shape in SHAPES:
        text = shape.pattern.sub(shape.replacement, text)
    return text


def _with_the_corpus(test):
    """The test run on every example of the corpus too, besides the random ones."""
    for examples in CORPUS.values():
        for written in examples:
            test = example(written)(test)
    return test


@settings(max_examples=300, deadline=None)
@given(SECRETS)
@_with_the_corpus
@example(Written("x-api-key: k3y-v4lue", "v4lue"))
@example(Written("Private_Key: zz9zz9", "zz9zz9"))
@example(Written("pwd=abc123", "abc123"))
def test_the_quick_scan_never_skips_what_a_shape_would_redact(written: Written):
    """Text with nothing secret-looking skips the shapes; each secret, in any case, still gets them."""
    assert not shown(written.secret, _every_shape(written.text), written.around)
    for text in {written.text, written.text.upper(), written.text.lower(), written.text.swapcase()}:
        for line in (text, f"before {text} after", f"ünïcode {text}"):  # the ASCII fast path and the other
            assert redact_text(line) == _every_shape(line), line


@settings(max_examples=500, deadline=None)
@given(log_lines(), st.integers(0, 400))
def test_a_cut_never_shows_part_of_a_secret(line, limit):
    """redact_text(text, limit) looks at `limit` characters only; the secret the cut splits is left out whole."""
    cut = redact_text(line.text, limit)
    assert len(cut) <= limit
    assert not shown(line.secret, cut, line.around), (line.text, cut)
    assert not shown(line.secret, redact_text(line.text)[:limit], line.around)


def test_a_cut_inside_a_secret_leaves_it_out():
    token = "ghp_" + "a1b2c3d4e5" * 3 + "f6g7h8"
    line = f"ERROR auth failed for {token} (retrying)"
    for limit in range(len("ERROR auth failed for ") + 5, len(line)):
        cut = redact_text(line, limit)
        assert token[:9] not in cut and cut.startswith("ERROR auth failed for "), cut
    assert redact_text('password="correct horse battery staple"', 24) == 'password="[REDACTED]'
    assert redact_text("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAxr8p", 40) == (f"-----{MASK} PRIVATE KEY-----")


def test_a_private_key_over_several_lines_is_masked_line_by_line():
    """A log's lines come one at a time: a key's body lines after its BEGIN line are masked up to its END line."""
    lines = [
        "2026-12-01T10:00:00Z ERROR bad key loaded: -----BEGIN EC PRIVATE KEY-----",
        "Proc-Type: 4,ENCRYPTED",
        "",
        "MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oJJkcsgvNbWdoAoGCCqGSM49",
        "  AwEHoUQDQgAE9KxPXZyhw3KPNp+3ctLwAA==",
        "-----END EC PRIVATE KEY----- while loading token=abcdef123",
        "2026-12-01T10:00:01Z ERROR next",
        "-----BEGIN PRIVATE KEY-----",  # cut short: masked until a line that cannot be part of it
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC",
        "2026-12-01T10:00:02Z ERROR after the key",
    ]
    assert list(redact_lines(lines)) == [
        f"2026-12-01T10:00:00Z ERROR bad key loaded: -----{MASK} PRIVATE KEY-----",
        MASK,
        MASK,
        MASK,
        MASK,
        f"{MASK} while loading token={MASK}",
        "2026-12-01T10:00:01Z ERROR next",
        f"-----{MASK} PRIVATE KEY-----",
        MASK,
        "2026-12-01T10:00:02Z ERROR after the key",
    ]


@settings(max_examples=300, deadline=None)
@given(log_lines(), st.integers(0, 260))
def test_a_providers_error_excerpt_never_shows_part_of_a_secret(line, padding):
    """Issue 19, finding 7: an LLM or embedding provider's error message (which may echo our request) was cut to
    200 characters and never redacted: a cut inside a token showed its start, a whole one showed all of it."""
    text = "x" * padding + " " + line.text
    for response in (
        httpx.Response(400, json={"error": {"message": text}}),  # OpenAI's shape
        httpx.Response(500, json={"error": text}),  # Ollama's
        httpx.Response(502, text=text),  # a proxy's page
    ):
        excerpt = error_excerpt(response)
        assert len(excerpt) <= EXCERPT + 1
        assert shown(line.secret, excerpt, line.around) == [], excerpt
    assert shown(line.secret, one_line(text), line.around) == []

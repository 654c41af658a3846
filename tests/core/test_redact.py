"""Secrets in agent output never reach storage."""

from __future__ import annotations

from core.redact import MASK, redact, redact_text


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


def test_the_quick_scan_never_skips_what_a_pattern_would_redact():
    """Text with nothing secret-looking skips the patterns; each shape, in any case, still gets them."""
    from core import redact as module

    shapes = [
        "AIza" + "b" * 35,
        "rk_live_" + "c" * 16,
        "sk-" + "d" * 20,
        "amt_" + "e" * 24,
        "ASIA" + "F" * 16,
        "github_pat_" + "g" * 30,
        "gho_" + "h" * 30,
        "https://u:pw123@host",
        "x-api-key: k3y-v4lue",
        "ACCESS-KEY=abc123def",
        "Private_Key: zz9zz9",
        "pwd=abc123",
        "/etc/app/db_password:hunter2",
        "a/b.token=abcdef",
        "token    abcdefgh1234",
        "-----BEGIN RSA PRIVATE KEY-----\nabc",
    ]
    for text in shapes:
        slow = text
        for pattern, replacement in module._PATTERNS:
            slow = pattern.sub(replacement, slow)
        assert slow != text, text  # the shape is one a pattern redacts
        assert redact_text(text) == slow
        assert redact_text(f"before {text} after") != f"before {text} after"

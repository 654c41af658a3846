"""Secrets of every shape core/redact.py masks, as services write them: a fixed corpus, hypothesis strategies for
random ones in random log lines, and the check that a text shows none of a secret."""

from __future__ import annotations

import string
from dataclasses import dataclass

from hypothesis import strategies as st

from core.redact import MASK


@dataclass(frozen=True)
class Written:
    """A secret as written (with its key, prefix or quotes) and the part of it that must never be shown."""

    text: str
    secret: str

    @property
    def around(self) -> str:
        """The text without the secret. It comes last in what is written (after a user name, a key, a key id): the
        same characters before it (postgres://pw:pw@…) are the text around it."""
        before, found, after = self.text.rpartition(self.secret)
        assert found, self
        return f"{before} {after}"


SHOWN_MAX = 4  # characters of a secret in a row that a text may show (by chance, or a bracket after a password)
# What redaction and log normalisation write: a run of them is not a secret shown.
WRITTEN_BY_US = f" {MASK} -----{MASK} PRIVATE KEY----- <n> <ts> [<ts>] <uuid> <hex> <id> <ip> … "


def shown(secret: str, text: str, around: str = "") -> list[str]:
    """The runs of SHOWN_MAX + 1 characters of the secret that the text shows, but those that are in `around` (the
    text the secret was written in) or that redaction and normalisation write themselves."""
    n = SHOWN_MAX + 1
    ours = around + WRITTEN_BY_US
    return sorted((_runs(secret, n) & _runs(text, n)) - _runs(ours, n))


def _runs(text: str, n: int) -> set[str]:
    return {run for i in range(len(text) - n + 1) if "\n" not in (run := text[i : i + n])}  # a key's lines: apart


# One or more of each shape, as a log line or a config dump shows it, with its secret part.
CORPUS: dict[str, list[Written]] = {
    "private_key": [
        Written(
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAxr8pEXAMPLEkeyBODY\nq2vT9Lw+/=\n"
            "-----END RSA PRIVATE KEY-----",
            "MIIEowIBAAKCAQEAxr8pEXAMPLEkeyBODY",
        ),
        Written("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA", "b3BlbnNzaC1rZXktdjEAAAAA"),
        Written(
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBGXexampleKEYdata\n-----END PGP PRIVATE KEY BLOCK-----",
            "lQOYBGXexampleKEYdata",
        ),
    ],
    "jwt": [
        Written(
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlX2hlcmU",
            "hbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlX2hlcmU",
        ),
        Written("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.", "hbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."),  # unsigned
    ],
    "aws_key_pair": [
        Written(
            "AKIAIOSFODNN7EXAMPLE,wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        ),
    ],
    "token": [
        Written("ghp_1234abcdEFGHijklMNOPqrstUVWXyz5678AB", "1234abcdEFGHijklMNOPqrstUVWXyz5678AB"),
        Written("gho_" + "h1" * 18, "h1" * 18),
        Written(
            "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV0123", "11ABCDEFG0abcdefghijkl_mnop"
        ),
        Written("xoxb-123-456-secretsecret", "123-456-secretsecret"),
        Written("xoxp-1234567890123-1234567890123-1234567890123-0123456789abcdef0123456789abcdef", "0123456789abcdef"),
        Written("xapp-1-A0123456789-1234567890123-abcdef0123456789", "A0123456789-1234567890123-abcdef"),
        Written("AKIAIOSFODNN7EXAMPLE", "IOSFODNN7EXAMPLE"),
        Written("ASIAY34FZKBOKMUTVV7A", "Y34FZKBOKMUTVV7A"),
        Written("AIzaSyD-9tSrke72PouQMnMX_abcdefghijklmn", "SyD-9tSrke72PouQMnMX_abcdefghijklmn"),
        Written("sk-proj-abcdefghijklmnopqrstuvwx", "abcdefghijklmnopqrstuvwx"),
        Written("rk_live_0123456789abcdefABCD", "0123456789abcdefABCD"),
        Written("amt_0123456789abcdefghijKLMN", "0123456789abcdefghijKLMN"),
    ],
    "url_password": [
        Written("postgres://app:s3cr3t-pw@db:5432/main", "s3cr3t-pw"),
        Written("redis://:hunter2hunter2@cache:6379/0", "hunter2hunter2"),
        Written("amqp://guest:g,u;e'st(1)@mq/", "g,u;e'st(1)"),
    ],
    "auth_scheme": [
        Written("Authorization: Bearer abcdef0123456789", "abcdef0123456789"),
        Written("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        Written("curl -H 'Authorization: Token 0123_abcd~efgh/ijkl+mn=='", "0123_abcd~efgh/ijkl+mn=="),
    ],
    "authorization": [
        Written("Authorization: Bearer q1w2e3", "q1w2e3"),  # too short for a bare bearer token: the header says it
        Written('{"authorization": "raw-token-9f8e7d"}', "raw-token-9f8e7d"),
        Written("Proxy-Authorization: Digest a1b2c3d4e5", "a1b2c3d4e5"),
    ],
    "key_value": [
        Written("env: DB_PASSWORD=hunter2hunter2 PORT=5432", "hunter2hunter2"),
        Written("mysql --password=hunter2hunter2 -h db", "hunter2hunter2"),
        Written('{"api_key": "abcdefghijklmnopqrstuvwx"}', "abcdefghijklmnopqrstuvwx"),
        Written(
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        Written(
            "AWS_SECRET_ACCESS_KEY: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        Written(
            '"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"', "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        ),
        Written("token=abc123def456&user=bob", "abc123def456"),
        Written("secret: s3cr3tv4lue", "s3cr3tv4lue"),
        Written('password="correct horse battery staple"', "correct horse battery staple"),
        Written("login failed (password=12345678)", "12345678"),  # digits only: a secret under `password`
        # A key at the end of a path, assigned or printed by grep (path:line), is still a key.
        Written("export conf/db.token=abcdef123", "abcdef123"),
        Written("/run/secrets/db_password:hunter2", "hunter2"),
    ],
}

ALNUM = string.ascii_letters + string.digits
B64 = ALNUM + "+/"
B64URL = ALNUM + "_-"
# A password as written bare (password=…): anything but what ends a value (space, quotes, , ; &) and the angle
# brackets of normalisation's own marks (<n>, <ts>).
BARE = "".join(c for c in string.printable if c not in string.whitespace + "\"',;&<>")
NOT_SECRETS = {"null", "none", "nil", "true", "false"}  # a JSON literal under a secret-looking key is left as it is


def _text(alphabet: str, least: int, most: int | None = None) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(alphabet), min_size=least, max_size=least if most is None else most)


@st.composite
def github_tokens(draw: st.DrawFn) -> Written:
    if draw(st.booleans()):
        body = draw(_text(ALNUM, 36))
        return Written(f"gh{draw(st.sampled_from('pousr'))}_{body}", body)
    body = f"{draw(_text(ALNUM, 22))}_{draw(_text(ALNUM, 59))}"
    return Written(f"github_pat_{body}", body)


@st.composite
def slack_tokens(draw: st.DrawFn) -> Written:
    kind = draw(st.sampled_from(["xoxb", "xoxp", "xoxa", "xoxr", "xoxs", "xoxe", "xapp"]))
    body = f"{draw(_text(string.digits, 1, 13))}-{draw(_text(string.digits, 1, 13))}-{draw(_text(ALNUM, 6, 32))}"
    return Written(f"{kind}-{body}", body)


@st.composite
def aws_keys(draw: st.DrawFn) -> Written:
    key_id = draw(st.sampled_from(["AKIA", "ASIA"])) + draw(_text(string.ascii_uppercase + string.digits, 16))
    secret = draw(_text(B64, 40))
    form = draw(
        st.sampled_from(
            [
                "{id}",
                "aws_secret_access_key={secret}",
                "aws_secret_access_key = {secret}",
                "AWS_SECRET_ACCESS_KEY: {secret}",
                '"SecretAccessKey": "{secret}"',
                "{id},{secret}",
                "{id} {secret}",
            ]
        )
    )
    return Written(form.format(id=key_id, secret=secret), key_id[4:] if form == "{id}" else secret)


@st.composite
def google_keys(draw: st.DrawFn) -> Written:
    body = draw(_text(B64URL, 35))
    return Written(f"AIza{body}", body)


@st.composite
def jwts(draw: st.DrawFn) -> Written:
    body = f"{draw(_text(B64URL, 10, 40))}.eyJ{draw(_text(B64URL, 10, 120))}.{draw(_text(B64URL, 0, 86))}"
    return Written(f"eyJ{body}", body)


@st.composite
def authorizations(draw: st.DrawFn) -> Written:
    """Authorization headers; a bare `Bearer …` outside one is a secret from 8 characters on (shorter is prose)."""
    header = draw(
        st.sampled_from(["Authorization: ", "authorization=", "Proxy-Authorization: ", "", '"Authorization": "'])
    )
    scheme = draw(st.sampled_from(["Bearer ", "Basic ", "Token ", "Digest ", ""] if header else ["Bearer ", "Basic "]))
    # Not one that names the header itself: `Bearer x.Authorization: …` is taken for a header after a credential.
    if header:
        credentials = draw(_text(ALNUM + "._~+/=-_", 4, 80).filter(lambda c: "authori" not in c.lower()))
    else:  # RFC 6750's b64token
        body = _text(ALNUM + "._~+/-_", 8, 80).filter(lambda c: "authori" not in c.lower())
        credentials = draw(body) + draw(st.sampled_from(["", "=", "=="]))
    closing = '"' if header.startswith('"') else ""
    return Written(f"{header}{scheme}{credentials}{closing}", credentials)


@st.composite
def private_keys(draw: st.DrawFn) -> Written:
    kind = draw(st.sampled_from(["", "RSA ", "EC ", "DSA ", "OPENSSH ", "ENCRYPTED "]))
    lines = [*draw(st.lists(_text(B64, 64), min_size=1, max_size=5)), draw(_text(B64, 4, 64))]
    # Cut short (no END line), it is the end of its line: text after base64 on the same line would read as a log
    # line of its own (core/redact.py's redact_lines).
    end = draw(st.sampled_from([f"\n-----END {kind}PRIVATE KEY-----", "\n"]))
    body = "\n".join(lines)
    return Written(f"-----BEGIN {kind}PRIVATE KEY-----\n{body}{end}", body)


@st.composite
def url_passwords(draw: st.DrawFn) -> Written:
    scheme = draw(st.sampled_from(["postgres", "postgresql+psycopg", "mysql", "redis", "amqp", "mongodb+srv", "https"]))
    user = draw(_text(ALNUM, 0, 12))
    password = draw(_text(ALNUM + "-._~!$&'()*+,;=%", 1, 30))  # RFC 3986 userinfo: unreserved, sub-delims, %XX
    host = draw(st.sampled_from(["db", "cache.internal:6379", "10.0.0.5:5432"]))
    return Written(f"{scheme}://{user}:{password}@{host}/app", password)


KEYS = ["password", "db_password", "DB_PASSWORD", "passwd", "pwd", "token", "api_token", "GITHUB_TOKEN", "secret",
        "client_secret", "api_key", "X-Api-Key", "access_key", "private_key", "aws_secret_access_key"]  # fmt: skip


@st.composite
def key_values(draw: st.DrawFn) -> Written:
    key = draw(st.sampled_from(KEYS))
    if draw(st.booleans()):
        value = draw(_text(BARE, 1, 40).filter(lambda v: v.rstrip(")]}").lower() not in NOT_SECRETS))
        form = draw(st.sampled_from(["{k}={v}", "{k}: {v}", "{k}:{v}", "{k} = {v}", "--{k}={v}"]))
    else:
        quote = draw(st.sampled_from(["'", '"']))
        # No quote of either kind inside: in `token="{secret}"` the first one would end the outer value.
        value = draw(_text("".join(c for c in string.printable if c not in "\"'\\<>\n\r\x0b\x0c"), 1, 40))
        form = draw(st.sampled_from(["{k}={q}{v}{q}", "{q}{k}{q}: {q}{v}{q}", "{k}: {q}{v}{q}"]))
        form = form.replace("{q}", quote)
    return Written(form.format(k=key, v=value), value)


SECRETS = st.one_of(
    github_tokens(),
    slack_tokens(),
    aws_keys(),
    google_keys(),
    jwts(),
    authorizations(),
    private_keys(),
    url_passwords(),
    key_values(),
)

# The text around a secret: words (secret-looking ones too), numbers, ids, addresses, paths, punctuation; no
# quotes: after a key in the text around, an opening quote would make the rest of the line up to the next quote
# (somewhere in the secret) that key's value.
WORDS = ["connection", "refused", "user", "request", "failed", "GET", "/api/v1/items", "status=500", "took", "ms",
         "token", "Bearer", "password", "secret", "key", "Authorization:", "auth", "retry", "id=", "level=error",
         "db", "x", "_", "-", "=", ":", "(", ")", "[", "]", "{", "}", "/", "\\", "#", "…"]  # fmt: skip
UNQUOTED = "".join(c for c in string.printable if c not in string.whitespace + "\"'")
PIECES = st.one_of(
    st.sampled_from(WORDS),
    st.integers(0, 10**12).map(str),
    st.floats(0, 1e6, allow_nan=False).map(lambda f: f"{f:g}"),
    st.uuids().map(str),
    _text("0123456789abcdef", 8, 40),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda ip: ".".join(map(str, ip))),
    _text(UNQUOTED, 1, 12),
)
# What may come right before and after a secret: not a letter or digit, which would make it part of a longer word.
BEFORE = [" ", "  ", "\t", "(", "[", "{", ",", ";", "|", '"', "'", "=", ": ", "> ", " - "]
AFTER = [" ", "\t", ")", "]", "}", ",", ";", ".", "|", '"', "'", "!", "?", ":", " - "]
STAMPS = ["", "2026-12-01T10:00:00.123Z ", "2026-12-01 10:00:00,123 ", "Dec  1 10:00:00 web1 app[42]: "]


@dataclass(frozen=True)
class LogLine:
    """A log line (or entry: a private key runs over several lines) with a secret in it."""

    text: str
    secret: str
    around: str  # the line without the secret


@st.composite
def log_lines(draw: st.DrawFn, secrets: st.SearchStrategy[Written] = SECRETS) -> LogLine:
    written = draw(secrets)
    head = " ".join(draw(st.lists(PIECES, max_size=8)))
    tail = " ".join(draw(st.lists(PIECES, max_size=8)))
    start = f"{draw(st.sampled_from(STAMPS))}ERROR {head}{draw(st.sampled_from(BEFORE))}"
    end = f"{draw(st.sampled_from(AFTER))}{tail}"
    return LogLine(start + written.text + end, written.secret, start + written.around + end)

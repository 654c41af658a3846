"""A Prometheus HTTP API over live scrapes, for investigate_metrics in the fault suite: `GET|POST /api/v1/query`
answers an instant vector selector (`name`, `name{label="v", other=~"re"}`) from the targets' `/metrics`, scraped
when asked, with Prometheus's `job` and `instance` labels and its `up` series (0 for a target that does not
answer). Nothing else of PromQL: a query that is not a selector gets Prometheus's `bad_data` answer.

The numbers come from the services themselves, so "error ratio 0.9" in an agent's output is what the broken
process reported, not a value a test wrote down (Debian's real Prometheus is not among the test dependencies).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.error import URLError
from urllib.parse import parse_qs, urlsplit
from urllib.request import urlopen

from tests.peers import serving

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SELECTOR = re.compile(rf"^\s*(?P<name>{NAME})\s*(?:\{{(?P<matchers>[^}}]*)\}})?\s*$")
MATCHER = re.compile(r'\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*,?')
SAMPLE = re.compile(rf"^(?P<name>{NAME})(?:\{{(?P<labels>.*)\}})?\s+(?P<value>\S+)")
LABEL = re.compile(r'(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')
SCRAPE_TIMEOUT = 1.0

Sample = tuple[str, dict[str, str], str]  # name, labels, value as written


class BadQuery(Exception):
    pass


@dataclass
class Scraper:
    """The targets, by job name (the service's name) and their metrics URL."""

    targets: dict[str, str] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)

    def scrape(self) -> list[Sample]:
        samples: list[Sample] = []
        for job, url in self.targets.items():
            instance = urlsplit(url).netloc
            try:
                with urlopen(url, timeout=SCRAPE_TIMEOUT) as answer:  # noqa: S310 - the tests' own targets
                    text = answer.read().decode()
                up = "1"
            except (URLError, OSError):
                text, up = "", "0"
            samples.append(("up", {"job": job, "instance": instance}, up))
            for line in text.splitlines():
                match = SAMPLE.match(line)
                if match and not line.startswith("#"):
                    labels = {m["label"]: m["value"] for m in LABEL.finditer(match["labels"] or "")}
                    samples.append((match["name"], {**labels, "job": job, "instance": instance}, match["value"]))
        return samples

    def query(self, query: str) -> list[dict[str, Any]]:
        self.queries.append(query)
        name, matchers = parse_selector(query)
        now = time.time()
        return [
            {"metric": {"__name__": sample, **labels}, "value": [now, value]}
            for sample, labels, value in self.scrape()
            if sample == name and all(matches(labels.get(label, ""), op, want) for label, op, want in matchers)
        ]


def parse_selector(query: str) -> tuple[str, list[tuple[str, str, str]]]:
    match = SELECTOR.match(query)
    if match is None:
        raise BadQuery(f"promlite answers instant vector selectors only, not {query[:80]!r}")
    text, matchers = match["matchers"] or "", []
    while text.strip():
        part = MATCHER.match(text)
        if part is None:
            raise BadQuery(f"cannot parse the label matchers {text[:80]!r}")
        matchers.append((part["label"], part["op"], part["value"].replace('\\"', '"')))
        text = text[part.end() :]
    return match["name"], matchers


def matches(value: str, op: str, want: str) -> bool:
    if op == "=":
        return value == want
    if op == "!=":
        return value != want
    found = re.fullmatch(want, value) is not None
    return found if op == "=~" else not found


@contextmanager
def prometheus(scraper: Scraper) -> Iterator[str]:
    """Serve the API on 127.0.0.1 for the scraper's targets; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            self.answer(parts.path, parse_qs(parts.query))

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            self.answer(urlsplit(self.path).path, parse_qs(body))

        def answer(self, path: str, params: dict[str, list[str]]) -> None:
            if path != "/api/v1/query":
                return self.send(404, {"status": "error", "errorType": "not_found", "error": f"{path} not served"})
            try:
                result = scraper.query((params.get("query") or [""])[-1])
            except BadQuery as err:
                return self.send(400, {"status": "error", "errorType": "bad_data", "error": str(err)})
            self.send(200, {"status": "success", "data": {"resultType": "vector", "result": result}})

        def send(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as base:
        yield base

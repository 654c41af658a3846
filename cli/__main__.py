"""`python -m cli …` is `agent-monitor …`."""

from cli.main import app

app()

"""What `agent-monitor web` serves (cli/main.py, web_server_options): the app of app/main.py behind the process's
admission limit (api/admission.py). Tests and benchmarks that build the app in-process use create_app itself."""

from __future__ import annotations

from api.admission import AdmissionLimit
from app.main import create_app
from core.settings import load_settings


def create_served_app() -> AdmissionLimit:
    """uvicorn's factory, in each process of `agent-monitor web --workers N`."""
    settings = load_settings()
    settings.configure_logging()  # a no-op where the command already did
    return AdmissionLimit(create_app(settings))

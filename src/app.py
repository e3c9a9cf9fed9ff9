"""The spec's entry point: `uvicorn src.app:app`. The service itself lives in src/service/."""

from src.service.factory import create_app

app = create_app()

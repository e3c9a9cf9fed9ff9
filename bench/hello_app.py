"""The yardstick: FastAPI's own speed on this machine, a constant reply and nothing else."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"status": "ok"}

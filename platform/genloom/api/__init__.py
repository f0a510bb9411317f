"""The HTTP API (FastAPI): `genloom serve`, or `uvicorn --factory genloom.api.app:create_app`."""

"""Developer scripts (run with `.venv/bin/python -m scripts.NAME`)."""

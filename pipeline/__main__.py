"""``python -m pipeline``: run the Hydra app."""

from pipeline.app.cli import main

main()

"""``python -m pipeline``: run the Hydra app."""

from pipeline.app import main

main()

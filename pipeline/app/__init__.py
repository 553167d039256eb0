"""The Hydra app on top of `pipeline.core`: configs in, run directories out.

`cli` is the Hydra entry point (``python -m pipeline``); `config` turns a
composed config into a plain `config.RunRequest`; `run` runs the stages into a
directory; `sweep_callback` and `summary` follow and summarize sweeps; the
commands `validate`, `inspect`, `replay` and `compare` read configs and run
directories.
"""

"""The lowering library: it knows nothing of Hydra or OmegaConf.

``contract`` first: `backend` is the contract a backend implements and the
helpers it may use; `registry` finds backends by name; `frontends` capture a
model; `debug_handles` and `source` tie nodes to source lines; `lowering`
runs a backend's preprocess and builds a `lowered_module.LoweredModule`,
whose methods `codegen` generates; `artifact` saves and loads it. The public
names are re-exported by ``pipeline`` itself.
"""

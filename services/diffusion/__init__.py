"""The diffusion worker: a generate worker on the diffusion engine (see shared/engine/diffusion/)."""

"""The worker: every engine-serving role (aggregated, decode half, prefill, embedding, images, the SGLang pair)."""

"""The encode worker: image URL -> vision-tower embeddings, kept in NIXL-registered memory for the LLM worker."""

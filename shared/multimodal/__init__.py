"""Images for vision-language models: fetch, preprocess, encode, expand placeholders, move embeddings."""

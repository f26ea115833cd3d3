"""The multimodal processor: registers a vision-language model, encodes its images, expands the prompt."""

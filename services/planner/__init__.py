"""The planner: sizes each model's prefill and decode (or aggregated) workers to TTFT/ITL targets."""

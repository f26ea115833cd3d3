"""The diffusion engine: masked-diffusion LMs (LLaDA-style), iterative unmasking with low-confidence remasking.

Modules: config (settings), model (bidirectional Llama forward), unmask (the
algorithm), state (one request), runner (one iteration, in the model thread),
engine (the Engine), args (the worker's --dllm-* flags). Nothing heavy is
imported here, so the worker's flags parse without torch.
"""

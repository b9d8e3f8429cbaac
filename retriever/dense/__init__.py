"""Dense retrieval: the retriever over encoded shards, its faiss and torch backends, encoders.
Submodules import numpy, faiss, torch and transformers as they need them."""

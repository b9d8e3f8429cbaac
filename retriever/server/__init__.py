"""Serving: the FastAPI app, the retrieval service, batching, cache, metrics, Ray Serve.

``python -m retriever.server --index ROOT`` runs the HTTP server.
"""

"""Index builders: corpus files to a passage store, then BM25 and dense indexes."""

"""Fast style models: the feed-forward transformer and its training."""

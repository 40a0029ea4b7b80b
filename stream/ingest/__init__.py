"""Stage 1, file arrives → FileEvent: the watcher and its ledger, where files come from (a directory
tree or an S3 prefix), reading bytes by URI, and curated labels for retraining."""

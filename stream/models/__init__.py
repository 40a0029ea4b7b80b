"""Which model serves: the model registry (a directory or s3://), hot swap of announced versions,
and announcing registry changes to running workers."""

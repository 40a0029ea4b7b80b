"""Stage 4, prediction → alert: the alert policy and the diagnostic figures alerts carry."""

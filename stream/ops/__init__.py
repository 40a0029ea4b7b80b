"""Operator tools without Grafana: a terminal status summary, a dashboard PNG, plain-text tables."""

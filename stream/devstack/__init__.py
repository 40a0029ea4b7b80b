"""The developer harness: the local stack (embedded broker, workers, watcher on one machine) and
the demo with its inputs. Not used by the deployed services."""

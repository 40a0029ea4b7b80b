"""The archive: every prediction, alert and dead letter, kept as Parquet beyond topic retention.

``writer`` consumes the result topics in its own consumer group and writes batched, immutable Parquet
files; ``query`` reads them back with pyarrow.dataset (de-duplicated, since delivery is at least once);
``store`` holds what both agree on: where the archive is, its layout and its column types.
"""

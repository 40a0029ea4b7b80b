"""SkyStream's serving side, one sub-package per stage of the data flow:

ingest (file arrives) → features (file → model inputs) → scoring (→ prediction) → alerts (→ alert),
with models (which model serves), runtime (Faust workers, Kafka), ops, cli and devstack beside them.
``kinds`` defines each kind of input once; ``settings`` reads every environment variable.
"""

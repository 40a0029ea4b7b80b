"""The worker program (`skystream worker`): the Faust app and its agents (app), their per-event logic
(events), the publish sink (sink), the Faust transport (transport), the supervisor that restarts the
Faust worker (supervisor), the stall watch (stall), the filter agent's side (filter_agent) and the
exit codes by which a worker asks to be restarted (exits).

The stars agent keeps each star's state in a Faust table whose changelog is a topic on the broker
(stream/stars): it writes the state only once the event's outputs are delivered, so a replayed event
meets a state that already has its sector and sends nothing twice, or one without it and sends the same
again.

Delivery guarantee: at least once, with idempotent results. Every message about a file is keyed by
its file_id, and the same file scored by the same model version always gives the same prediction_id
and content, so a replay repeats a message but never changes an answer. Each agent works in batches:
consume → score → produce → flush (TopicSink.flush: the broker has every outcome) → commit (Faust
commits a batch's offsets only after the agent finished it). A worker that dies mid-batch leaves the
batch uncommitted, and the next owner of the partition replays it. Faust's exactly_once (Kafka
transactions; SKYSTREAM_PROCESSING_GUARANTEE) was measured on Kafka and not made the default: it cost
a fifth more CPU and twice the latency and still let duplicates through after a worker was killed
(docs/experiments/exactly-once.md).

Which mechanism runs on which broker (broker profiles, stream/runtime/profiles.py; SKYSTREAM_BROKER_ENGINE
kafka, tansu, or auto from the cluster id; docs/embedded-broker.md numbers tansu's defects; the
variables SKYSTREAM_FETCH_MAX_WAIT_MS, SKYSTREAM_WORKER_STALL_SECONDS and
SKYSTREAM_WATCH_RESET_RECHECK_SECONDS still tune, or with 0 turn off, what a profile runs):

==========================================  =====================  =========================  =============
mechanism                                   where                  kafka                      tansu
==========================================  =====================  =========================  =============
at-least-once batches, flush before commit  app, sink              yes                        yes
restart the child when it exits (backoff)   supervisor             yes                        yes
poll cluster id/topics every second, kill   supervisor             no                         yes (defect 7)
the child on a reset or a 3-s outage
commits fenced by cluster id (exit 76)      transport              no                         yes (defect 4)
stall watch (exit 77)                       stall, app             no                         yes (defect 7)
watcher: 3 rechecks after a reset           ingest/resolver        no                         yes (defect 5)
watcher: republish what has no outcome      ingest/watcher         no                         after 300 s
after a while                                                                                 (defect 5)
watcher: poll cluster id every 2 s          ingest/resolver        no (only after an error)   yes (defect 7)
group session / heartbeat / rebalance       app                    45 / 3 / 60 s              6 / 1 / 6 s
                                                                                              (defect 2)
fetch long-poll                             transport              500 ms                     50 ms
idempotent producer (acks=all)              transport              yes                        no (defect 3)
==========================================  =====================  =========================  =============
"""

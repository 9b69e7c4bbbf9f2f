"""The node's OTLP endpoint: applications on the node export here, the agent adds what it knows
of them and relays everything to the collector.

`service.RelayService` ties together the receivers (`http_receiver`, `grpc_receiver`), the
sender identification (`peers`, `enrich`), the intake that hands GenAI spans to node-local
pairing (`intake`, `agent.pair.node`), the bounded buffer and its books (`buffer`), and the
senders that deliver with OTLP's retry rules (`sender`, `forward`, `endpoint`).
"""

"""``obsflow collect``: the HTTP and OTLP/HTTP front door. Every 2xx it answers means
Kafka acknowledged (acks=all, idempotent producer) every record of the request; otherwise
503/429 with Retry-After, or 4xx for input that will never be accepted. See docs/collect.md."""

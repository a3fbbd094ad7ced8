"""The adversarial suite: attacks on the signaling server run at full speed while its memory,
descriptors and /healthz latency are measured (pytest tests/adversarial; make fuzz-signaling)."""

"""Control-plane side of connectors: cluster records, tokens, heartbeats and the command queue."""

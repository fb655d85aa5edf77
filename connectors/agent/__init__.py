"""The outbound-only cluster agent (``metacloud-agent``)."""

"""Control-plane side of connectors: cluster records, tokens, heartbeats and the command queue.

==================  ==========================================================================
``clusters``        cluster records, state changes (compare-and-set + history row), detach, delete
``tokens``          registration tokens: issue, re-issue, atomic redemption, install commands
``credentials``     agent credentials: ``agent_session`` (authenticate + narrow), rotation, revocation
``heartbeats``      the heartbeat hot path: one upsert statement; reconnect
``commands``        the command queue: enqueue (+ NOTIFY), lease (SKIP LOCKED), ack, result
``notify``          one LISTEN connection per process waking long polls
``health``          the stale-heartbeat sweep across orgs
``models``          the tables
==================  ==========================================================================

Services take the tenant scope first and flush, never commit; agent calls reach the database through
``credentials.agent_session``; workflows call these through ``workflows.clusters.activities``.
"""

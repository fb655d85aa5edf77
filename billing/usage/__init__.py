"""Metering: usage records from agents, their hourly rollups, the free allowance and the rate card.

Modules: ``ids`` (resources, units, record ids), ``models`` (tables), ``partitions`` (monthly
partitions), ``ingest`` (validate and store a batch), ``rollups`` (rebuild and compare), ``allowance``
(pure, exact), ``rates`` (versioned prices), ``periods`` (calendar months, closing one),
``queries`` (period summaries, billable usage, late usage).
"""

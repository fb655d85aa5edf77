"""Jobs on connected clusters: records, the placement core (pure), the scheduler, and services."""

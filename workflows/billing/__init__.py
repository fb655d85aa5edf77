"""The billing cycle and dunning as Temporal workflows (see ``workflow`` for the flows)."""

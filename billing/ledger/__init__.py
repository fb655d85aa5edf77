"""The invoice ledger: accounts, plan history, invoices and their lines, applied Stripe events.

Modules: ``models`` (tables), ``periods`` (months), ``accounts`` (the org's account and Stripe
customer), ``invoices`` (write, issue, read, estimate), ``status`` (forward-only invoice status),
``push`` (the Stripe push and collection state machine).
"""

"""Planning what a question may spend and accounting for what it spent: prices, budgets in
dollars, the ledger (and, later, policies and cascades)."""

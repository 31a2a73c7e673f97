"""Teacher loading, student families and sizing a student to a target's budget."""
